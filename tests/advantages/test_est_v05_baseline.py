"""V0.5 (arXiv 2603.10848, reading): prior-shrunk baseline and the test."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_v05_baseline import v05_baseline
from jaxrl_group.advantages._est_v05_baseline import v05_deviation_test


def apply(tx, r, prior, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  prior = np.asarray(prior, np.float32)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask,
                              value_prior_B=prior)[0])


def np_v05(r, mask, prior):
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    vals = np.asarray(r[b][mask[b]], np.float64)
    n = len(vals)
    if n:
      m, v = vals.mean(), float(prior[b])
      s2n = v * (1 - v) / n
      den = s2n + (v - m)**2
      lam = s2n / den if den > 0 else 1.0
      out[b][mask[b]] = vals - (lam * v + (1 - lam) * m)
  return out


class V05BaselineTest(parameterized.TestCase):

  def test_hand_values(self):
    # [1, 0, 0, 0], v = 0.5: m = 0.25, s^2/n = 0.25/4 = 0.0625,
    # (v - m)^2 = 0.0625 -> lam = 0.5, b = 0.375.
    # [1, 1, 0, 0], v = 0.5: m = v -> lam = 1, b = 0.5 (= the mean).
    # singleton [1], v = 0.5: s^2/n = 0.25, (v - m)^2 = 0.25 -> lam = 0.5,
    # b = 0.75, A = 0.25 (the prior keeps a one-rollout group informative).
    r = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    mask = [[True] * 4, [True] * 4, [True, False, False, False]]
    adv = apply(v05_baseline(), r, [0.5, 0.5, 0.5], mask)
    np.testing.assert_allclose(adv, [[0.625, -0.375, -0.375, -0.375],
                                     [0.5, 0.5, -0.5, -0.5],
                                     [0.25, 0.0, 0.0, 0.0]], rtol=1e-6)

  def test_far_prior_and_deviation_test(self):
    # [1, 1, 1, 1], v = 0.2: s^2/n = 0.16/4 = 0.04, (v - m)^2 = 0.64,
    # lam = 0.04/0.68 = 0.0588235, b = 0.0588235*0.2 + 0.9411765 = 0.9529412.
    # Test: |m - v| = 0.8 > 1.96 * sqrt(0.04) = 0.392 -> rejected -> b = m.
    r = [[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]]
    prior = [0.2, 0.6]
    adv = apply(v05_baseline(), r, prior)
    np.testing.assert_allclose(adv[0], 1 - 0.95294118, rtol=1e-5)
    adv = apply(v05_baseline(z_alpha=1.96), r, prior)
    np.testing.assert_allclose(adv[0], 0.0, atol=1e-7)
    # Row 2: |0.5 - 0.6| = 0.1 < 1.96 * sqrt(0.24/4) = 0.48: kept;
    # lam = 0.06 / 0.07 = 6/7, b = 6/7 * 0.6 + 1/7 * 0.5 = 0.585714.
    np.testing.assert_allclose(adv[1], [1 - 0.5857143, -0.5857143,
                                        1 - 0.5857143, -0.5857143],
                               rtol=1e-5)
    reject = v05_deviation_test(np.asarray(r, np.float32),
                                np.asarray(prior, np.float32))
    np.testing.assert_array_equal(reject, [True, False])

  def test_division_hazards(self):
    # v in {0, 1}: s^2 = 0. Agreeing rollouts: 0/0 -> lam = 1, b = v = m.
    # Disagreeing: lam = 0, b = m. Fully masked group: zeros.
    r = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0, 0]]
    mask = [[True] * 3, [True] * 3, [True] * 3, [False] * 3]
    adv = apply(v05_baseline(), r, [1.0, 1.0, 0.0, 0.5], mask)
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_allclose(adv, [[0, 0, 0], [2 / 3, -1 / 3, -1 / 3],
                                     [0, 0, 0], [0, 0, 0]], atol=1e-6)
    reject = v05_deviation_test(np.asarray(r, np.float32),
                                np.asarray([1.0, 1.0, 0.0, 0.5], np.float32),
                                mask_BxG=np.asarray(mask))
    np.testing.assert_array_equal(reject, [False, True, False, False])

  def test_matches_numpy_loop_with_padding(self):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.4, (16, 4)).astype(np.float32)
    mask = rng.random((16, 4)) < 0.7
    mask[0] = [True, False, False, False]
    prior = rng.uniform(0, 1, 16).astype(np.float32)
    prior[1] = 0.0
    adv = apply(v05_baseline(), r, prior, mask)
    np.testing.assert_allclose(adv, np_v05(r, mask, prior), rtol=1e-5,
                               atol=1e-6)

  def test_empirical_variance_and_norm_by_std(self):
    # [1, 0.5, 0], v = 0.9: m = 0.5, unbiased var 0.25, s^2/n = 1/12;
    # (v - m)^2 = 0.16 -> lam = (1/12)/(1/12 + 0.16) = 0.342466,
    # b = 0.5 + lam * 0.4 = 0.636986.
    r = [[1.0, 0.5, 0.0]]
    adv = apply(v05_baseline(variance="empirical"), r, [0.9])
    np.testing.assert_allclose(adv, [[0.363014, -0.136986, -0.636986]],
                               rtol=1e-5)
    adv_n = apply(v05_baseline(variance="empirical", norm_by_std=True,
                               eps=0.0), r, [0.9])
    np.testing.assert_allclose(adv_n, adv / 0.5, rtol=1e-5)
    # A singleton has no sample variance: lam = 0, A = 0; with
    # norm_by_std its std is taken as 1 (no blow-up by 1/eps).
    adv = apply(v05_baseline(variance="empirical"), [[0.7, 0.0]], [0.2],
                [[True, False]])
    np.testing.assert_array_equal(adv, [[0.0, 0.0]])
    adv = apply(v05_baseline(norm_by_std=True), [[1.0, 0.0]], [0.5],
                [[True, False]])
    np.testing.assert_allclose(adv, [[0.25 / (1 + 1e-6), 0.0]], rtol=1e-6)

  def test_traced_z_alpha(self):
    tx = A.inject_hyperparams(v05_baseline)(z_alpha=100.0)
    r = np.ones((1, 4), np.float32)
    prior = np.asarray([0.2], np.float32)
    state = tx.init(r)
    adv, _ = jax.jit(tx.update)(r, state, value_prior_B=prior)
    np.testing.assert_allclose(adv, 1 - 0.95294118, rtol=1e-5)
    state = state._replace(hyperparams={"z_alpha": np.float32(1.96)})
    adv, _ = jax.jit(tx.update)(r, state, value_prior_B=prior)
    np.testing.assert_allclose(adv, 0.0, atol=1e-7)

  @parameterized.named_parameters(("eager", False), ("jit", True))
  def test_bad_input_names_the_argument(self, jit):
    tx = v05_baseline()
    update = jax.jit(tx.update) if jit else tx.update
    r = np.zeros((2, 4), np.float32)
    with self.assertRaisesRegex(A.MissingContextError, "value_prior_B"):
      update(r, tx.init(r))
    with self.assertRaisesRegex(ValueError, r"v05_baseline: value_prior_B "
                                r"must have shape \[B\] = \(2,\)"):
      update(r, tx.init(r), value_prior_B=np.zeros(3, np.float32))
    with self.assertRaisesRegex(TypeError, "value_prior_B must be a floating"):
      update(r, tx.init(r), value_prior_B=np.zeros(2, np.int32))

  def test_bad_conventions(self):
    with self.assertRaisesRegex(ValueError, "v05_baseline: variance must be "
                                "one of"):
      v05_baseline(variance="gauss")
    with self.assertRaisesRegex(ValueError, "value_prior_B must have rank 1"):
      v05_deviation_test(np.zeros((2, 4), np.float32),
                         np.zeros((2, 1), np.float32))


if __name__ == "__main__":
  absltest.main()
