"""Answer parsing and rewards on token arrays."""

import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import tasks as T

TOK = T.CharTokenizer()
EOS = "$"  # Stands for <eos> in the golden strings below.


def ids(text):
  """Ids of ``text``, with '$' written as <eos>."""
  return [T.EOS_ID if c == EOS else TOK.encode(c)[0] for c in text]


def batch(texts_BxG, t=12, masks=None):
  """``[B, G, T]`` right-padded ids; the mask is True on the written ids.

  ``masks`` optionally gives a 0/1 string per completion, overriding it.
  """
  b, g = len(texts_BxG), len(texts_BxG[0])
  tokens = np.full((b, g, t), T.PAD_ID, np.int32)
  mask = np.zeros((b, g, t), bool)
  for i, row in enumerate(texts_BxG):
    for j, text in enumerate(row):
      tokens[i, j, :len(text)] = ids(text)
      mask[i, j, :len(text)] = True
      if masks is not None and masks[i][j] is not None:
        m = [c == "1" for c in masks[i][j]]
        mask[i, j] = False
        mask[i, j, :len(m)] = m
  return tokens, mask


def reference_parse(tokens_T, mask_T, max_digits=9):
  """The module doc's rule, written directly on the valid token list."""
  seq = [int(x) for x, m in zip(tokens_T, mask_T) if m]
  if T.EOS_ID not in seq:
    return 0, False
  body = "".join(T.VOCAB[x] for x in seq[:seq.index(T.EOS_ID)])
  if re.fullmatch(r"-?[0-9]{1,%d}" % max_digits, body):
    return int(body), True
  return 0, False


class ParseAnswerTest(parameterized.TestCase):

  def test_golden_cases(self):
    cases = [  # (completion, value, well_formed)
        ("12$", 12, True),
        ("13$", 13, True),
        ("12", 0, False),          # No EOS: cut off.
        ("12x$", 0, False),        # Trailing junk before the EOS.
        ("12 $", 0, False),
        (" 12$", 0, False),
        ("07$", 7, True),          # Leading zeros read as the value.
        ("0$", 0, True),
        ("$", 0, False),           # Empty answer.
        ("-12$", -12, True),
        ("-0$", 0, True),
        ("-$", 0, False),
        ("--1$", 0, False),
        ("1-2$", 0, False),
        ("12$34x", 12, True),      # EOS ends it; the rest is ignored.
        ("12$$", 12, True),
        ("123456789$", 123456789, True),
        ("1234567890$", 0, False),   # 10 digits: over max_digits.
        ("0000000007$", 0, False),
        ("x$", 0, False),
    ]
    tokens, mask = batch([[c for c, _, _ in cases]])
    value, ok = jax.jit(T.parse_answer)(tokens, mask)
    self.assertEqual(value.dtype, jnp.int32)
    self.assertEqual(ok.dtype, jnp.bool_)
    for g, (text, want_value, want_ok) in enumerate(cases):
      self.assertEqual(int(value[0, g]), want_value, text)
      self.assertEqual(bool(ok[0, g]), want_ok, text)

  def test_mask_cuts_the_sequence(self):
    texts = [["12$", "12$", "1x2$", "-12$", "12$", "12$"]]
    masks = [[
        "110",      # EOS outside the mask: not well formed.
        "011",      # First digit masked out: reads "2".
        "1011",     # Junk masked out: reads "12".
        "0111",     # Sign masked out: reads "12".
        "000",      # Nothing valid.
        "1111111",  # Valid padding after the EOS is ignored.
    ]]
    tokens, mask = batch(texts, masks=masks)
    value, ok = T.parse_answer(tokens, mask)
    np.testing.assert_array_equal(ok, [[False, True, True, True, False,
                                        True]])
    np.testing.assert_array_equal(value, [[0, 2, 12, 12, 0, 12]])
    # '-' is accepted only as the first valid token.
    tokens, mask = batch([["x-5$"]], masks=[["0111"]])
    self.assertEqual(T.parse_answer(tokens, mask)[0].tolist(), [[-5]])

  def test_leading_dims(self):
    tokens, mask = batch([["42$", "4x$"]], t=5)
    value, ok = T.parse_answer(tokens[0, 0], mask[0, 0])
    self.assertEqual((int(value), bool(ok)), (42, True))
    value4, ok4 = T.parse_answer(np.stack([tokens, tokens]),
                                 np.stack([mask, mask]))
    self.assertEqual(value4.shape, (2, 1, 2))
    np.testing.assert_array_equal(value4, [[[42, 0]], [[42, 0]]])
    np.testing.assert_array_equal(ok4, [[[True, False]], [[True, False]]])
    # No mask: every token counts; the padding after the EOS is ignored.
    value, ok = T.parse_answer(np.asarray(ids("42$") + [0, 0]))
    self.assertEqual((int(value), bool(ok)), (42, True))

  def test_max_digits(self):
    tokens, mask = batch([["123$", "1234$", "-123$"]])
    value, ok = T.parse_answer(tokens, mask, max_digits=3)
    np.testing.assert_array_equal(ok, [[True, False, True]])
    np.testing.assert_array_equal(value, [[123, 0, -123]])
    for bad in (0, 10, 2.0):
      with self.assertRaisesRegex(ValueError, r"max_digits must be an int in "
                                  r"\[1, 9\]"):
        T.parse_answer(tokens, mask, max_digits=bad)

  @parameterized.parameters(0, 1, 2)
  def test_random_against_reference(self, seed):
    rng = np.random.default_rng(seed)
    alphabet = np.asarray(ids("0123456789-x$") + [T.PAD_ID])
    # Mostly digits, some EOS, a little noise.
    p = np.asarray([6.0] * 10 + [1.0, 0.5, 3.0, 0.5])
    tokens = rng.choice(alphabet, size=(32, 16, 12), p=p / p.sum())
    mask = rng.random((32, 16, 12)) < 0.9
    value, ok = jax.jit(T.parse_answer)(tokens.astype(np.int32), mask)
    value, ok = np.asarray(value), np.asarray(ok)
    n_ok = 0
    for idx in np.ndindex(32, 16):
      want_value, want_ok = reference_parse(tokens[idx], mask[idx])
      self.assertEqual((int(value[idx]), bool(ok[idx])),
                       (want_value, want_ok), tokens[idx])
      n_ok += want_ok
    self.assertBetween(n_ok, 50, 450)  # Both outcomes are exercised.

  def test_errors(self):
    tokens, mask = batch([["1$"]])
    with self.assertRaisesRegex(ValueError, "mask must have the shape"):
      T.parse_answer(tokens, mask[..., :-1])
    with self.assertRaisesRegex(TypeError, "mask must be a boolean"):
      T.parse_answer(tokens, mask.astype(np.int32))
    with self.assertRaisesRegex(TypeError, "tokens must be an integer"):
      T.parse_answer(tokens.astype(np.float32), mask)
    with self.assertRaisesRegex(ValueError, "trailing time axis"):
      T.parse_answer(np.int32(3))


class RewardTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Row 0 asks for 46, row 1 for -7.
    self.tokens, self.mask = batch([["46$", "46", "45$", "046$"],
                                    ["-7$", "7$", "-7x$", "$"]])
    self.answers = np.asarray([46, -7], np.int32)

  def test_exact_match_and_format(self):
    r = jax.jit(T.exact_match)(self.tokens, self.mask, self.answers)
    self.assertEqual(r.dtype, jnp.float32)
    np.testing.assert_array_equal(r, [[1, 0, 0, 1], [1, 0, 0, 0]])
    f = T.format_reward(self.tokens, self.mask)
    self.assertEqual(f.dtype, jnp.float32)
    np.testing.assert_array_equal(f, [[1, 0, 1, 1], [1, 1, 0, 0]])

  def test_make_verifier(self):
    verify = T.make_verifier(correct_weight=2.0, format_weight=0.5)
    r, metrics = jax.jit(verify)(self.tokens, self.mask, self.answers)
    np.testing.assert_allclose(r, [[2.5, 0, 0.5, 2.5], [2.5, 0.5, 0, 0]])
    self.assertEqual(set(metrics), {"correct", "well_formed"})
    np.testing.assert_array_equal(metrics["correct"],
                                  [[1, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(metrics["well_formed"],
                                  [[1, 0, 1, 1], [1, 1, 0, 0]])
    for m in metrics.values():
      self.assertEqual((m.shape, m.dtype), ((2, 4), jnp.float32))

  def test_registry(self):
    self.assertEqual(set(T.VERIFIERS), {"exact_match", "exact_match_format"})
    r, _ = T.VERIFIERS["exact_match"](self.tokens, self.mask, self.answers)
    np.testing.assert_array_equal(r, T.exact_match(self.tokens, self.mask,
                                                   self.answers))
    r, _ = T.VERIFIERS["exact_match_format"](self.tokens, self.mask,
                                             self.answers)
    # Correct gives exactly 1.0 (0.9 + 0.1), well formed but wrong 0.1.
    np.testing.assert_array_equal(
        r, np.asarray([[1, 0, 0.1, 1], [1, 0.1, 0, 0]], np.float32))

  def test_gold_completions_of_a_task_score_one(self):
    task = T.TASKS["mul2"]
    b = jax.tree.map(np.asarray, task.sample(jax.random.key(0), 64))
    t_a = b.targets_BxA.shape[1]
    mask_BxA = np.arange(t_a)[None, :] < b.target_lengths_B[:, None]
    targets_Bx1xA = b.targets_BxA[:, None, :]
    r = T.exact_match(targets_Bx1xA, mask_BxA[:, None, :], b.answers_B)
    np.testing.assert_array_equal(r, np.ones((64, 1)))
    # The mask may also cover the padding after the EOS.
    r = T.exact_match(targets_Bx1xA, None, b.answers_B)
    np.testing.assert_array_equal(r, np.ones((64, 1)))
    shifted = np.roll(b.answers_B, 1)
    r = T.exact_match(targets_Bx1xA, None, shifted)
    np.testing.assert_array_equal(
        r[:, 0], np.asarray(b.answers_B == shifted, np.float32))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, r"answers_B must have shape \[B\]"):
      T.exact_match(self.tokens, self.mask, self.answers[:1])
    with self.assertRaisesRegex(ValueError, "tokens_BxGxT must have rank 3"):
      T.exact_match(self.tokens[0], self.mask[0], self.answers)
    with self.assertRaisesRegex(TypeError, "answers_B must be an integer"):
      T.exact_match(self.tokens, self.mask, self.answers.astype(np.float32))
    with self.assertRaisesRegex(ValueError, "correct_weight must be finite"):
      T.make_verifier(correct_weight=float("nan"))
    verify = T.make_verifier()
    with self.assertRaisesRegex(ValueError, "mask_BxGxT must have shape"):
      verify(self.tokens, self.mask[:1], self.answers)


if __name__ == "__main__":
  absltest.main()
