"""Length handling: DAPO overlong shaping, overlong filtering, TRL masks."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _length as length

# L_max = 10, L_cache = 4: the punishment interval is (6, 10].
LENGTHS = np.array([[0, 6, 7, 8], [10, 11, 20, 3]])


def _dapo_paper(n, l_max, l_cache):
  """The DAPO paper's piecewise function, written out case by case."""
  if n <= l_max - l_cache:
    return 0.0
  if n <= l_max:
    return ((l_max - l_cache) - n) / l_cache
  return -1.0


class OverlongRewardShapingTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # (6 - 7) / 4 = -0.25, (6 - 8) / 4 = -0.5, (6 - 10) / 4 = -1, then -1.
      ("paper", "paper", 1.0,
       [[0, 0, -0.25, -0.5], [-1, -1, -1, 0]]),
      # verl: min(-(L - 6) / 4 * c, 0) keeps going: -5/4, -14/4.
      ("verl", "verl", 1.0,
       [[0, 0, -0.25, -0.5], [-1, -1.25, -3.5, 0]]),
      # The factor scales the linear part and, in the paper form, the floor.
      ("paper_factor", "paper", 0.5,
       [[0, 0, -0.125, -0.25], [-0.5, -0.5, -0.5, 0]]),
      ("verl_factor", "verl", 0.5,
       [[0, 0, -0.125, -0.25], [-0.5, -0.625, -1.75, 0]]),
  )
  def test_golden(self, form, factor, expected):
    r = length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=4,
                                       penalty_factor=factor, form=form)
    np.testing.assert_allclose(r, expected, rtol=1e-6)
    self.assertEqual(r.dtype, jnp.float32)

  def test_paper_is_the_papers_function(self):
    lengths = np.arange(0, 30).reshape(5, 6)
    r = length.overlong_reward_shaping(lengths, max_len=20, cache_len=8)
    expected = np.vectorize(_dapo_paper)(lengths, 20, 8)
    np.testing.assert_allclose(r, expected, rtol=1e-6)

  def test_forms_agree_up_to_max_len(self):
    lengths = np.arange(0, 21).reshape(3, 7)
    for c in (0.3, 1.0, 2.0):
      p = length.overlong_reward_shaping(lengths, max_len=20, cache_len=8,
                                         penalty_factor=c)
      v = length.overlong_reward_shaping(lengths, max_len=20, cache_len=8,
                                         penalty_factor=c, form="verl")
      np.testing.assert_allclose(p, v, rtol=1e-6)

  def test_float_lengths_mask_and_x64(self):
    mask = np.array([[True, True, True, False], [True, False, True, True]])
    r = length.overlong_reward_shaping(LENGTHS.astype(np.float32),
                                       max_len=10, cache_len=4,
                                       mask_BxG=mask)
    np.testing.assert_allclose(r, [[0, 0, -0.25, 0], [-1, 0, -1, 0]])
    with jax.enable_x64(True):
      r = length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=4)
      self.assertEqual(r.dtype, jnp.float64)

  def test_jit_with_traced_hyperparameters(self):
    f = lambda m, c, k: length.overlong_reward_shaping(
        LENGTHS, max_len=m, cache_len=c, penalty_factor=k)
    np.testing.assert_allclose(jax.jit(f)(10, 4, 0.5), f(10, 4, 0.5))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "cache_len must be > 0"):
      length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=0)
    with self.assertRaisesRegex(ValueError, "cache_len must be <= max_len"):
      length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=11)
    with self.assertRaisesRegex(ValueError, "form must be one of"):
      length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=4,
                                     form="trl")
    with self.assertRaisesRegex(ValueError, "penalty_factor must be >= 0"):
      length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=4,
                                     penalty_factor=-1.0)
    with self.assertRaisesRegex(ValueError, "lengths_BxG must have rank 2"):
      length.overlong_reward_shaping(LENGTHS[0], max_len=10, cache_len=4)
    with self.assertRaisesRegex(ValueError, "mask_BxG must have shape"):
      length.overlong_reward_shaping(LENGTHS, max_len=10, cache_len=4,
                                     mask_BxG=np.ones((2, 3), bool))


EOS, OTHER_EOS, PAD = 2, 3, 0


class TruncationTest(parameterized.TestCase):

  @staticmethod
  def _hand():
    tokens = np.array([[
        [5, 6, EOS, PAD],  # finished
        [5, 6, 7, 8],  # cut at the budget
        [5, OTHER_EOS, PAD, PAD],  # finished with the second EOS id
        [5, EOS, 7, PAD],  # EOS inside, but the last valid token is 7
        [PAD, PAD, PAD, PAD],  # empty
        [5, 9, 6, EOS],  # finished exactly at the budget
    ]])
    mask = np.array([[
        [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0],
        [0, 0, 0, 0], [1, 0, 1, 1]]], bool)  # last row: a masked env token
    return tokens, mask

  def test_is_truncated(self):
    tokens, mask = self._hand()
    t = length.is_truncated(tokens, mask, eos_ids=[EOS, OTHER_EOS])
    np.testing.assert_array_equal(
        t, [[False, True, False, True, False, False]])
    # With one EOS id the third completion counts as truncated.
    t = length.is_truncated(tokens, mask, eos_ids=EOS)
    np.testing.assert_array_equal(
        t, [[False, True, True, True, False, False]])

  def test_mask_truncated_completions(self):
    tokens, mask = self._hand()
    m = length.mask_truncated_completions(tokens, mask,
                                          eos_ids=(EOS, OTHER_EOS))
    expected = mask.copy()
    expected[0, 1] = False
    expected[0, 3] = False
    np.testing.assert_array_equal(m, expected)

  def test_overlong_filter_mask(self):
    _, mask = self._hand()
    truncated = np.array([[True, True, False, False, True, False]])
    m = length.overlong_filter_mask(truncated, mask)
    expected = mask & ~truncated[..., None]
    np.testing.assert_array_equal(m, expected)
    self.assertEqual(int(np.asarray(m).sum()), 3 + 2 + 3)

  def test_jit_equals_eager(self):
    tokens, mask = self._hand()
    f = lambda tk, m: length.mask_truncated_completions(tk, m, eos_ids=[2, 3])
    np.testing.assert_array_equal(jax.jit(f)(tokens, mask), f(tokens, mask))

  def test_errors(self):
    tokens, mask = self._hand()
    with self.assertRaisesRegex(TypeError, "truncated_BxG must be a boolean"):
      length.overlong_filter_mask(np.zeros((1, 6)), mask)
    with self.assertRaisesRegex(ValueError, "truncated_BxG must have shape"):
      length.overlong_filter_mask(np.zeros((1, 5), bool), mask)
    with self.assertRaisesRegex(TypeError, "tokens_BxGxT must be an integer"):
      length.is_truncated(tokens.astype(np.float32), mask, eos_ids=EOS)
    with self.assertRaisesRegex(ValueError, "tokens_BxGxT must have shape"):
      length.is_truncated(tokens[..., :3], mask, eos_ids=EOS)
    with self.assertRaisesRegex(ValueError, "eos_ids must name at least"):
      length.is_truncated(tokens, mask, eos_ids=[])
    with self.assertRaisesRegex(TypeError, "eos_ids must be an integer"):
      length.is_truncated(tokens, mask, eos_ids=2.0)


if __name__ == "__main__":
  absltest.main()
