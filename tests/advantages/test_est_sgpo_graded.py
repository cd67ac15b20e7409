"""Golden values for sgpo_graded (SGPO, arXiv 2505.11595), by hand and numpy."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_sgpo_graded import sgpo_graded


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def np_grpo(x, eps=1e-6):
  x = np.asarray(x, np.float64)
  return (x - x.mean()) / (x.std(ddof=1) + eps)


def sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


class SgpoGradedTest(parameterized.TestCase):

  def test_hand_values_all_wrong_group(self):
    # k = [1, 3, 5, 2] of n = 4 steps (1-based): RTS = (k - 1) / 4 =
    # [0, 0.5, 1, 0.25]. beta 4, gamma 0.5, scale 0.5:
    # r~ = 0.5 sigmoid(4 (RTS - 0.5)) = 0.5 sigmoid([-2, 0, 2, -1])
    #    = [0.0596015, 0.25, 0.4403986, 0.1344707].
    graded = 0.5 * sigmoid([-2.0, 0.0, 2.0, -1.0])
    np.testing.assert_allclose(graded, [0.0596015, 0.25, 0.4403986,
                                        0.1344707], rtol=1e-6)
    tx = sgpo_graded(beta=4.0, gamma=0.5, scale=0.5)
    adv = apply(tx, [[0.0, 0.0, 0.0, 0.0]],
                first_error_step_BxG=np.array([[1, 3, 5, 2]], np.int32),
                num_steps_BxG=np.full((1, 4), 4, np.int32))
    np.testing.assert_allclose(adv[0], np_grpo(graded), rtol=1e-5, atol=1e-6)
    # Ordering: responses that fail later get larger advantages.
    self.assertEqual(list(np.argsort(adv[0])), [0, 3, 1, 2])

  def test_groups_with_a_correct_answer_are_plain_grpo(self):
    rng = np.random.default_rng(0)
    r = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]], np.float32)
    ctx = dict(first_error_step_BxG=np.full((2, 4), np.nan, np.float32),
               num_steps_BxG=rng.uniform(1, 9, (2, 4)).astype(np.float32))
    adv = apply(sgpo_graded(), r, **ctx)
    np.testing.assert_allclose(adv, apply(A.grpo(), r), rtol=1e-6)
    # Row 0 by hand: mean 1/4, unbiased std 1/2 -> [1.5, -0.5, -0.5, -0.5].
    np.testing.assert_allclose(adv[0], [1.5, -0.5, -0.5, -0.5], rtol=1e-5,
                               atol=1e-6)

  def test_minus_one_one_rewards_and_threshold(self):
    # -1/1 rewards: -1 <= 0.5 is wrong. Equal k: all graded rewards equal.
    adv = apply(sgpo_graded(), [[-1.0, -1.0, -1.0]],
                first_error_step_BxG=np.array([[2.0, 2.0, 2.0]], np.float32),
                num_steps_BxG=np.array([[5.0, 5.0, 5.0]], np.float32))
    np.testing.assert_array_equal(adv, 0)
    # A threshold above the best reward makes the group all-wrong.
    k = np.array([[1.0, 4.0]], np.float32)
    n = np.array([[3.0, 3.0]], np.float32)
    adv = apply(sgpo_graded(correct_threshold=2.0), [[1.0, 0.0]],
                first_error_step_BxG=k, num_steps_BxG=n)
    # RTS [0, 1] -> graded 0.5 sigmoid(-2.5) < 0.5 sigmoid(2.5): [-, +].
    np.testing.assert_allclose(adv[0], [-0.7071063, 0.7071063], rtol=1e-5,
                               atol=1e-6)

  def test_rts_clipping_indexing_and_zero_steps(self):
    k = np.array([[0.0, 2.0, 9.0]], np.float32)
    n = np.array([[4.0, 4.0, 4.0]], np.float32)
    r = [[0.0, 0.0, 0.0]]
    # Clipped, 1-based: RTS = clip([-0.25, 0.25, 2]) = [0, 0.25, 1].
    got = apply(sgpo_graded(), r, first_error_step_BxG=k,
                num_steps_BxG=n)
    want = np_grpo(0.5 * sigmoid(5.0 * (np.array([0, 0.25, 1]) - 0.5)))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    # Unclipped: RTS = [-0.25, 0.25, 2].
    got = apply(sgpo_graded(clip_rts=False), r, first_error_step_BxG=k,
                num_steps_BxG=n)
    want = np_grpo(0.5 * sigmoid(5.0 * (np.array([-0.25, 0.25, 2]) - 0.5)))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    # 0-based: RTS = clip(k / 4) = [0, 0.5, 1].
    got = apply(sgpo_graded(first_step_index=0), r,
                first_error_step_BxG=k, num_steps_BxG=n)
    want = np_grpo(0.5 * sigmoid(5.0 * (np.array([0, 0.5, 1]) - 0.5)))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    # n = 0 (the judge found no steps) is floored at 1: finite.
    got = apply(sgpo_graded(), r, first_error_step_BxG=k,
                num_steps_BxG=np.zeros((1, 3), np.float32))
    self.assertTrue(np.isfinite(got).all())

  def test_masked_correct_answer_does_not_count(self):
    # The only correct answer is masked: the group is all-wrong.
    r = [[1.0, 0.0, 0.0, 0.0]]
    mask = [[False, True, True, True]]
    k = np.array([[1.0, 1.0, 3.0, 5.0]], np.float32)
    n = np.full((1, 4), 4.0, np.float32)
    adv = apply(sgpo_graded(), r, mask, first_error_step_BxG=k,
                num_steps_BxG=n)
    graded = 0.5 * sigmoid(5.0 * (np.array([0.0, 0.5, 1.0]) - 0.5))
    np.testing.assert_allclose(adv[0, 1:], np_grpo(graded), rtol=1e-5,
                               atol=1e-6)
    self.assertEqual(adv[0, 0], 0.0)

  def test_matches_numpy_on_random_batch(self):
    rng = np.random.default_rng(1)
    b, g = 16, 6
    r = rng.binomial(1, 0.2, (b, g)).astype(np.float32)
    r[:4] = 0  # several all-wrong groups for sure
    mask = rng.random((b, g)) < 0.85
    mask[:, :2] = True
    n = rng.integers(1, 12, (b, g)).astype(np.int32)
    k = rng.integers(1, 13, (b, g)).astype(np.int32)
    adv = apply(sgpo_graded(), r, mask, first_error_step_BxG=k,
                num_steps_BxG=n)
    want = np.zeros((b, g))
    for i in range(b):
      m = mask[i]
      x = r[i][m].astype(np.float64)
      if not (x > 0.5).any():
        rts = np.clip((k[i][m] - 1) / n[i][m], 0, 1)
        x = 0.5 * sigmoid(5.0 * (rts - 0.5))
      want[i][m] = np_grpo(x)
    np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)

  def test_traced_hyperparameters(self):
    r = np.zeros((2, 4), np.float32)
    ctx = dict(first_error_step_BxG=np.array([[1, 2, 3, 4], [4, 3, 2, 1]]),
               num_steps_BxG=np.full((2, 4), 4))
    tx = A.inject_hyperparams(sgpo_graded)(beta=3.0, gamma=0.4, scale=0.7)
    state = tx.init(r)
    got, _ = jax.jit(tx.update)(r, state, **ctx)
    want = apply(sgpo_graded(beta=3.0, gamma=0.4, scale=0.7), r, **ctx)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_bad_input_names_the_argument(self):
    r = np.zeros((2, 3), np.float32)
    k = np.ones((2, 3), np.float32)
    tx = sgpo_graded()
    with self.assertRaisesRegex(A.MissingContextError, "num_steps_BxG"):
      tx.update(r, tx.init(r), first_error_step_BxG=k)
    with self.assertRaisesRegex(ValueError, r"sgpo_graded: num_steps_BxG "
                                r"must have shape \[B, G\]"):
      tx.update(r, tx.init(r), first_error_step_BxG=k,
                num_steps_BxG=np.ones((2, 4)))
    with self.assertRaisesRegex(TypeError, "first_error_step_BxG must be an "
                                "integer or floating"):
      tx.update(r, tx.init(r), first_error_step_BxG=k > 0, num_steps_BxG=k)
    with self.assertRaisesRegex(ValueError, "sgpo_graded: std must be one"):
      sgpo_graded(std="bessel")
    with self.assertRaisesRegex(ValueError, "beta must be >= 0"):
      sgpo_graded(beta=-1.0)


if __name__ == "__main__":
  absltest.main()
