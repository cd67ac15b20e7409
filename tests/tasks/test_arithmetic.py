"""Arithmetic tasks: layout, golden content, held-out split, validation."""

import functools
import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import tasks as T
from jaxrl_group.tasks import _arithmetic

TOK = T.CharTokenizer()


def sample(task, key, batch_size, split="train"):
  return jax.tree.map(np.asarray,
                      task.sample(key, batch_size, split=split))


# Shared by several tests: each distinct (task, size, split) compiles once.
@functools.cache
def train_samples(name):
  return sample(T.TASKS[name], jax.random.key(11), 4096)


@functools.cache
def eval_samples(name):
  return sample(T.TASKS[name], jax.random.key(12), 8192, split="eval")


def prompt_set(batch):
  return set(TOK.decode_batch(batch.prompts_BxP))


class PresetTest(parameterized.TestCase):

  def test_presets(self):
    self.assertEqual(set(T.TASKS),
                     {"add2", "add3", "add4", "sum3x2", "mul1", "mul2"})
    add2 = T.TASKS["add2"]
    self.assertEqual((add2.op, add2.num_digits, add2.num_terms,
                      add2.prompt_len, add2.answer_len), ("add", 2, 2, 16, 4))
    want = {  # name: (op, term digits, answer_len)
        "add3": ("add", (3, 3), 5), "add4": ("add", (4, 4), 6),
        "sum3x2": ("add", (2, 2, 2), 4), "mul1": ("mul", (1, 2), 4),
        "mul2": ("mul", (2, 2), 5)}
    for name, (op, digits, a) in want.items():
      task = T.TASKS[name]
      self.assertEqual((task.op, task.term_digits, task.answer_len),
                       (op, digits, a), name)
      self.assertLessEqual(task.max_prompt_len, task.prompt_len)
      self.assertIs(T.make_task(name), task)  # No overrides: same preset.

  def test_make_task_overrides(self):
    task = T.make_task("add2", num_digits=5, name="add5")
    self.assertEqual((task.name, task.num_digits, task.answer_len),
                     ("add5", 5, 7))  # 199998 has 6 digits, + EOS.
    self.assertEqual(T.make_task("add2", prompt_len=20).prompt_len, 20)
    self.assertEqual(T.make_task("add2", answer_len=8).answer_len, 8)
    self.assertEqual(T.make_task("mul2", num_terms=3).answer_len, 7)
    # Hashable, equal by value: usable as a static jit argument.
    self.assertEqual(hash(T.make_task("add2", prompt_len=16)),
                     hash(T.TASKS["add2"]))

  def test_validation_errors(self):
    with self.assertRaisesRegex(ValueError, r"unknown task 'add9'.*'add2'"):
      T.make_task("add9")
    with self.assertRaisesRegex(ValueError, r"unknown field.*'digits'"):
      T.make_task("add2", digits=3)
    with self.assertRaisesRegex(
        ValueError, r"prompt_len=5 is too short.*6 characters.*>= 6"):
      T.make_task("add2", prompt_len=5)
    with self.assertRaisesRegex(ValueError, "prompt_len=16 is too short"):
      T.make_task("add4", num_digits=8)  # 8+8+2 = 18 characters.
    with self.assertRaisesRegex(ValueError,
                                r"num_digits=9 .*1999999998, 10 digits"):
      T.make_task("add2", num_digits=9, prompt_len=32)
    with self.assertRaisesRegex(ValueError, "num_digits=5 .*9999800001"):
      T.make_task("mul2", num_digits=5)
    with self.assertRaisesRegex(ValueError, r"answer_len=3 is too short.*>= 4"):
      T.make_task("add2", answer_len=3)
    with self.assertRaisesRegex(ValueError, "op must be one of"):
      T.make_task("add2", op="sub")
    with self.assertRaisesRegex(ValueError, "num_terms must be an int >= 2"):
      T.make_task("add2", num_terms=1)
    with self.assertRaisesRegex(ValueError, "batch_size must be a static int"):
      T.TASKS["add2"].sample(jax.random.key(0), 0)
    with self.assertRaisesRegex(ValueError, "split must be one of"):
      T.TASKS["add2"].sample(jax.random.key(0), 4, split="test")

  def test_largest_allowed_task(self):
    # 8-digit sums have 9-digit answers, the most that int32 parsing allows.
    task = T.make_task("add2", num_digits=8, prompt_len=18)
    b = sample(task, jax.random.key(1), 64)
    for text, ans in zip(TOK.decode_batch(b.prompts_BxP), b.answers_B):
      x, y = text[:-1].split("+")
      self.assertEqual(int(x) + int(y), int(ans))
      self.assertEqual(len(x), 8)


class SampleContentTest(parameterized.TestCase):

  @parameterized.parameters("add2", "add3", "add4", "sum3x2", "mul1", "mul2")
  def test_batch_matches_python(self, name):
    task = T.TASKS[name]
    full = train_samples(name)
    p, a = task.prompt_len, task.answer_len
    self.assertEqual(full.prompts_BxP.shape, (4096, p))
    self.assertEqual(full.targets_BxA.shape, (4096, a))
    self.assertEqual(full.operands_BxN.shape, (4096, task.num_terms))
    for x in full:
      self.assertEqual(x.dtype, np.int32)
    b = jax.tree.map(lambda x: x[:256], full)
    prompts = TOK.decode_batch(b.prompts_BxP)
    sep = "+" if task.op == "add" else "*"
    ops = np.asarray(b.operands_BxN)
    for i, text in enumerate(prompts):
      m = re.fullmatch(r"(\d+(?:[+*]\d+)*)=", text)
      self.assertIsNotNone(m, text)
      terms = m.group(1).split(sep)
      self.assertEqual([int(t) for t in terms], ops[i].tolist(), text)
      for t, d in zip(terms, task.term_digits):
        # True d-digit numbers: no leading zeros; d = 1 allows 0..9.
        self.assertEqual(len(t), d, text)
        self.assertTrue(d == 1 or t[0] != "0", text)
      want = (sum(map(int, terms)) if task.op == "add"
              else int(np.prod([int(t) for t in terms])))
      self.assertEqual(int(b.answers_B[i]), want, text)
      # Left padding: the text fills the last positions, pads before it.
      n = len(text)
      self.assertEqual(int(b.prompt_lengths_B[i]), n)
      np.testing.assert_array_equal(b.prompts_BxP[i, :p - n], 0)
      np.testing.assert_array_equal(b.prompts_BxP[i, p - n:],
                                    TOK.encode(text))
      # Gold completion: digits, EOS, right padding.
      digits = str(want)
      self.assertEqual(int(b.target_lengths_B[i]), len(digits) + 1)
      np.testing.assert_array_equal(
          b.targets_BxA[i],
          TOK.encode(digits) + [T.EOS_ID] + [T.PAD_ID] * (a - len(digits) - 1))

  def test_build_batch_golden(self):
    b = T.build_batch(T.TASKS["add2"], np.asarray([[12, 34], [99, 99]]))
    want, _ = TOK.encode_batch(["12+34=", "99+99="], 16)
    np.testing.assert_array_equal(b.prompts_BxP, want)
    # '4' = 8, '6' = 10; '1' = 5, '9' = 13, '8' = 12.
    np.testing.assert_array_equal(b.targets_BxA, [[8, 10, 1, 0],
                                                  [5, 13, 12, 1]])
    np.testing.assert_array_equal(b.answers_B, [46, 198])
    np.testing.assert_array_equal(b.target_lengths_B, [3, 4])
    np.testing.assert_array_equal(b.prompt_lengths_B, [6, 6])
    b = T.build_batch(T.TASKS["mul1"], np.asarray([[0, 10], [7, 99]]))
    self.assertEqual(TOK.decode_batch(b.prompts_BxP), ["0*10=", "7*99="])
    np.testing.assert_array_equal(b.targets_BxA, [[4, 1, 0, 0],
                                                  [10, 13, 7, 1]])
    with self.assertRaisesRegex(ValueError, "N = num_terms = 3"):
      T.build_batch(T.TASKS["sum3x2"], np.asarray([[12, 34]]))

  def test_sft_batch_layout(self):
    b = T.build_batch(T.TASKS["add2"], np.asarray([[12, 34], [99, 99]]))
    tokens, mask = T.sft_batch(b)
    self.assertEqual(tokens.shape, (2, 20))
    self.assertEqual(mask.dtype, jnp.bool_)
    np.testing.assert_array_equal(
        tokens[0], [0] * 10 + TOK.encode("12+34=") + [8, 10, 1, 0])
    np.testing.assert_array_equal(
        tokens[1], [0] * 10 + TOK.encode("99+99=") + [5, 13, 12, 1])
    np.testing.assert_array_equal(mask[0], [False] * 16 + [1, 1, 1, 0])
    np.testing.assert_array_equal(mask[1], [False] * 16 + [1, 1, 1, 1])

  def test_jit_equals_eager_and_determinism(self):
    task = T.TASKS["sum3x2"]
    key = jax.random.key(11)
    eager = train_samples("sum3x2")
    jitted = jax.jit(functools.partial(task.sample, batch_size=4096))(key)
    for x, y in zip(eager, jitted):
      np.testing.assert_array_equal(x, y)
    again = sample(task, jax.random.key(11), 4096)
    np.testing.assert_array_equal(again.operands_BxN, eager.operands_BxN)
    other = sample(task, jax.random.key(4), 4096)
    self.assertFalse(np.array_equal(other.operands_BxN, eager.operands_BxN))

  def test_operands_cover_the_range(self):
    ops = train_samples("add2").operands_BxN
    self.assertEqual(ops.min(), 10)
    self.assertEqual(ops.max(), 99)
    # Uniform on 10..99: mean 54.5, std of the mean of 8192 about 0.29.
    self.assertAlmostEqual(ops.mean(), 54.5, delta=1.5)


class SplitTest(parameterized.TestCase):

  def test_hash_agrees_and_ignores_order(self):
    ops = _arithmetic._enumerate(T.TASKS["add2"], 8100)
    is_eval = np.asarray(T.is_eval_problem(ops))
    np.testing.assert_array_equal(is_eval, _arithmetic._is_eval_np(ops))
    np.testing.assert_array_equal(is_eval,
                                  np.asarray(T.is_eval_problem(ops[:, ::-1])))
    # About 1/16 of the 8100 problems (506 expected, std about 22).
    self.assertBetween(is_eval.sum(), 400, 620)
    self.assertEqual(T.EVAL_FRACTION, 1 / 16)

  @parameterized.parameters("add2", "mul1", "sum3x2")
  def test_train_and_eval_are_disjoint(self, name):
    task = T.TASKS[name]
    train, evals = train_samples(name), eval_samples(name)
    self.assertFalse(np.any(T.is_eval_problem(train.operands_BxN)))
    self.assertTrue(np.all(T.is_eval_problem(evals.operands_BxN)))
    # Independently of the hash: no prompt, nor a reordering of one, is in
    # both splits.
    train_sets = {tuple(sorted(r)) for r in
                  np.asarray(train.operands_BxN).tolist()}
    eval_sets = {tuple(sorted(r)) for r in
                 np.asarray(evals.operands_BxN).tolist()}
    self.assertEmpty(train_sets & eval_sets)
    self.assertEmpty(prompt_set(train) & prompt_set(evals))
    fixed = task.eval_set(0, 48)  # mul1 has only 51 eval problems.
    self.assertEmpty(prompt_set(train) & prompt_set(fixed))
    # The train split is not collapsed onto a few problems.
    self.assertGreater(len(train_sets), 1000 if name != "mul1" else 500)

  def test_eval_sampling_covers_the_eval_split(self):
    task = T.TASKS["add2"]
    ops = _arithmetic._enumerate(task, 8100)
    all_eval = {tuple(r) for r in ops[_arithmetic._is_eval_np(ops)].tolist()}
    got = {tuple(r) for r in eval_samples("add2").operands_BxN.tolist()}
    self.assertLessEqual(got, all_eval)
    # 8192 uniform draws from ~506 problems miss each with prob ~1e-7.
    self.assertEqual(got, all_eval)

  @parameterized.parameters("train", "eval")
  def test_fallback_lands_in_the_split(self, split):
    task = T.TASKS["add2"]
    ops = np.asarray(jax.jit(functools.partial(
        _arithmetic._sample_operands, task, batch_size=1024, split=split,
        rounds=1))(jax.random.key(0)))
    is_eval = np.asarray(T.is_eval_problem(ops))
    self.assertTrue(np.all(is_eval == (split == "eval")))
    fallback = np.asarray(_arithmetic._fallbacks(task)[split])
    used = np.all(ops == fallback[None, :], axis=1).sum()
    # One round misses 1/16 of train rows and 15/16 of eval rows.
    if split == "eval":
      self.assertGreater(used, 850)
    else:
      self.assertBetween(used, 30, 110)

  def test_eval_set_small_space(self):
    task = T.TASKS["mul2"]
    a, b = task.eval_set(0, 200), task.eval_set(0, 200)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    self.assertFalse(np.array_equal(task.eval_set(1, 200).operands_BxN,
                                    a.operands_BxN))
    rows = [tuple(r) for r in np.asarray(a.operands_BxN).tolist()]
    self.assertLen(set(rows), 200)
    self.assertTrue(np.all(T.is_eval_problem(a.operands_BxN)))
    self.assertEqual(a.prompts_BxP.shape, (200, 16))
    n_eval = int(_arithmetic._is_eval_np(
        _arithmetic._enumerate(task, task.num_problems)).sum())
    self.assertLen(set(map(tuple, np.asarray(task.eval_set(
        0, n_eval).operands_BxN).tolist())), n_eval)
    with self.assertRaisesRegex(ValueError,
                                f"more than the {n_eval} eval problems"):
      task.eval_set(0, n_eval + 1)

  def test_eval_set_large_space(self):
    task = T.TASKS["add4"]
    self.assertGreater(task.num_problems, 1 << 20)
    a, b = task.eval_set(5, 300), task.eval_set(5, 300)
    np.testing.assert_array_equal(a.operands_BxN, b.operands_BxN)
    np.testing.assert_array_equal(a.targets_BxA, b.targets_BxA)
    rows = [tuple(r) for r in np.asarray(a.operands_BxN).tolist()]
    self.assertLen(set(rows), 300)
    self.assertTrue(np.all(T.is_eval_problem(a.operands_BxN)))
    self.assertTrue(np.all(a.operands_BxN >= 1000))

  def test_fixed_problems_of_each_split(self):
    for task in T.TASKS.values():
      fb = _arithmetic._fallbacks(task)
      self.assertFalse(_arithmetic._is_eval_np(np.asarray([fb["train"]]))[0])
      self.assertTrue(_arithmetic._is_eval_np(np.asarray([fb["eval"]]))[0])
      for x, d in zip(fb["eval"], task.term_digits):
        self.assertEqual(len(str(x)), d)


if __name__ == "__main__":
  absltest.main()
