"""Difficulty-weighted GRPO (arXiv 2505.13261): W(p_g) times the z-score."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_difficulty_weight import difficulty_weight
from jaxrl_group.advantages._est_difficulty_weight import difficulty_weight_fn


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


def np_reference(r, mask, *, weight, eps=1e-6):
  """Per-group float64 loop: unbiased z-score times weight(mean)."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    vals = r[b][mask[b]]
    if len(vals) > 1:
      z = (vals - vals.mean()) / (vals.std(ddof=1) + eps)
      out[b][mask[b]] = weight(np.clip(vals.mean(), 0, 1)) * z
  return out


class DifficultyWeightTest(parameterized.TestCase):

  def test_hand_values_linear(self):
    # [1, 0, 0, 0]: p = 0.25, z = [1.5, -0.5, -0.5, -0.5], W = 1 + 0.75.
    # [1, 1, 1, 0]: p = 0.75, z = [0.5, 0.5, 0.5, -1.5], W = 1 + 0.25.
    r = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    adv = apply(difficulty_weight(eps=0.0), r)
    np.testing.assert_allclose(
        adv, [[2.625, -0.875, -0.875, -0.875],
              [0.625, 0.625, 0.625, -1.875]], rtol=1e-6)

  def test_hand_values_exp_and_lam(self):
    # "exp", lam 2: W(0.25) = exp(2 * 0.75) = 4.4817; 1.5 * W = 6.7225.
    r = [[1.0, 0.0, 0.0, 0.0]]
    adv = apply(difficulty_weight(weight="exp", lam=2.0, eps=0.0), r)
    np.testing.assert_allclose(adv[0, 0], 1.5 * np.exp(1.5), rtol=1e-6)
    np.testing.assert_allclose(adv[0, 1], -0.5 * np.exp(1.5), rtol=1e-6)

  def test_harder_prompt_gets_larger_signal(self):
    # Same z-scores up to sign, lower accuracy: larger |A|.
    r = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]
    adv = apply(difficulty_weight(), r)
    self.assertGreater(np.abs(adv[0]).sum(), np.abs(adv[1]).sum())
    np.testing.assert_allclose(np.abs(adv[0]).sum() / np.abs(adv[1]).sum(),
                               1.75 / 1.25, rtol=1e-5)

  def test_built_in_weights(self):
    p = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(difficulty_weight_fn("linear", 1.0)(p),
                               [2.0, 1.5, 1.0])
    np.testing.assert_allclose(difficulty_weight_fn("exp", 1.0)(p),
                               [np.e, np.exp(0.5), 1.0], rtol=1e-6)

  def test_lam_zero_is_grpo(self):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.4, (6, 8)).astype(np.float32)
    mask = rng.random((6, 8)) < 0.8
    for kind in ("linear", "exp"):
      np.testing.assert_allclose(apply(difficulty_weight(weight=kind, lam=0.0),
                                       r, mask),
                                 apply(A.grpo(), r, mask), rtol=1e-6)

  def test_callable_weight_matches_numpy_loop(self):
    rng = np.random.default_rng(1)
    r = rng.binomial(1, 0.5, (16, 8)).astype(np.float32)
    mask = rng.random((16, 8)) < 0.8
    mask[0] = [True] + [False] * 7  # singleton
    mask[1] = True
    w = lambda p: 2.0 - p**2
    adv = apply(difficulty_weight(weight=w), r, mask)
    np.testing.assert_allclose(adv, np_reference(r, mask, weight=w),
                               rtol=1e-5, atol=1e-6)
    adv = apply(difficulty_weight(lam=0.5), r, mask)
    np.testing.assert_allclose(
        adv, np_reference(r, mask, weight=lambda p: 1 + 0.5 * (1 - p)),
        rtol=1e-5, atol=1e-6)

  def test_success_threshold_for_partial_credit(self):
    # p = #{r >= 0.8} / 4 = 0.5 -> W = 1.5 (not the mean 0.65 -> 1.35).
    r = np.array([[0.9, 0.2, 1.0, 0.5]])
    z = (r - r.mean()) / r.std(ddof=1)
    adv = apply(difficulty_weight(success_threshold=0.8, eps=0.0), r)
    np.testing.assert_allclose(adv, 1.5 * z, rtol=1e-5)
    adv = apply(difficulty_weight(eps=0.0), r)
    np.testing.assert_allclose(adv, 1.35 * z, rtol=1e-5)

  def test_masked_accuracy_uses_valid_samples_only(self):
    # Valid [1, 0, 0] (p = 1/3, W = 5/3); the masked 1 is ignored.
    r = [[1.0, 0.0, 0.0, 1.0]]
    adv = apply(difficulty_weight(eps=0.0), r, [[True, True, True, False]])
    z = np.array([1.0, 0.0, 0.0]) - 1 / 3
    z /= np.std([1.0, 0.0, 0.0], ddof=1)
    np.testing.assert_allclose(adv[0, :3], 5 / 3 * z, rtol=1e-5)
    self.assertEqual(adv[0, 3], 0.0)

  def test_edges_finite(self):
    r = [[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0], [0.7, 9.0, 9.0, 9.0]]
    mask = [[True] * 4, [False] * 4, [True, False, False, False]]
    adv = apply(difficulty_weight(), r, mask)
    np.testing.assert_array_equal(adv, np.zeros((3, 4)))
    # verl's singleton: mean 0, std 1 -> 0.7 / (1 + eps), times W(0.7) = 1.3.
    adv = apply(difficulty_weight(singleton="raw"), r, mask)
    np.testing.assert_allclose(adv[2, 0], 1.3 * 0.7 / (1 + 1e-6), rtol=1e-6)
    self.assertTrue(np.isfinite(adv).all())

  def test_traced_lam(self):
    tx = A.inject_hyperparams(difficulty_weight)(lam=1.0, eps=0.0)
    r = jnp.array([[1.0, 0.0, 0.0, 0.0]])
    state = tx.init(r)
    state = state._replace(hyperparams={**state.hyperparams,
                                        "lam": jnp.float32(3.0)})
    adv, _ = jax.jit(tx.update)(r, state)
    np.testing.assert_allclose(adv[0, 0], 1.5 * (1 + 3 * 0.75), rtol=1e-6)

  def test_bad_arguments_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, "difficulty_weight: weight must "
                                "be one of"):
      difficulty_weight(weight="quadratic")
    with self.assertRaisesRegex(ValueError, "lam must be >= 0"):
      difficulty_weight(lam=-1.0)
    with self.assertRaisesRegex(ValueError, "std must be one of"):
      difficulty_weight(std="bessel")
    tx = difficulty_weight()
    with self.assertRaisesRegex(ValueError, "difficulty_weight: rewards_BxG "
                                "must have rank 2"):
      tx.update(np.zeros(4, np.float32), tx.init(None))
    with self.assertRaisesRegex(ValueError, "group size G >= 2"):
      tx.update(np.zeros((4, 1), np.float32), tx.init(None))


if __name__ == "__main__":
  absltest.main()
