"""S-GRPO (arXiv 2508.05928): golden values, the worked check, w* = 0 edges."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_s_grpo import noise_weight
from jaxrl_group.advantages._est_s_grpo import s_grpo


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


def np_weight(k, n, p, eps=1e-8):
  rbar = k / n
  t = min(max((rbar - p) / (1 - 2 * p), 0.0), 1.0)
  return ((1 - 2 * p) * t * (1 - t)
          / (np.sqrt(rbar * (1 - rbar) + eps) * np.sqrt(t * (1 - t) + eps)))


def np_s_grpo(r, mask, p=0.1, eps=1e-8, thr=0.0):
  """Per-group loop in float64: w* (r - mean) / (std_unbiased + eps)."""
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    vals = r[b][mask[b]].astype(np.float64)
    n = len(vals)
    if n < 2:
      continue
    w = np_weight(np.sum(vals > thr), n, p)
    out[b][mask[b]] = w * (vals - vals.mean()) / (vals.std(ddof=1) + eps)
  return out


class SGrpoTest(parameterized.TestCase):

  def test_worked_check_weight(self):
    # Reference §2.8: p = 0.1, n = 8, k = 1 gives w* ~= 0.42. By hand:
    # rbar = 0.125, t = (0.125 - 0.1) / 0.8 = 0.03125,
    # num = 0.8 * 0.03125 * 0.96875 = 0.0242188,
    # den = sqrt(0.109375) * sqrt(0.0302734) = 0.330719 * 0.173993
    #     = 0.0575431; w* = 0.420883.
    w = float(noise_weight(1.0, 8.0, 0.1))
    self.assertAlmostEqual(w, 0.42, places=2)
    self.assertAlmostEqual(w, 0.420883, places=5)

  def test_worked_check_advantages(self):
    # One success of 8: GRPO gives (7/8)/sqrt(1/8) = 2.474874 and
    # -(1/8)/sqrt(1/8) = -0.353553; times w* = 0.420883:
    # 1.041630 and -0.148804.
    r = np.zeros((1, 8))
    r[0, 2] = 1
    adv = apply(s_grpo(), r)
    np.testing.assert_allclose(adv[0, 2], 1.041630, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 0], -0.148804, rtol=1e-5)
    self.assertAlmostEqual(float(adv.sum()), 0.0, places=5)

  @parameterized.named_parameters(
      ("all_fail", [0, 0, 0, 0, 0, 0, 0, 0]),
      ("all_pass", [1, 1, 1, 1, 1, 1, 1, 1]),
      # rbar = 1/10 = p: t = 0, w* = 0.
      ("rbar_equals_p", [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
      # rbar = 9/10 = 1 - p: t = 1, w* = 0.
      ("rbar_equals_one_minus_p", [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]),
  )
  def test_zero_weight_groups_are_finite_zero(self, r):
    adv = apply(s_grpo(noise_rate=0.1), [r])
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_array_equal(adv, 0.0)

  @parameterized.parameters(dict(weight_eps=1e-8), dict(weight_eps=0.0))
  def test_zero_weight_with_eps_zero_stays_finite(self, weight_eps):
    # All-equal group with eps = 0: 0 / 0 in the std division, but w* = 0;
    # weight_eps = 0 makes w*'s own denominator 0 at t = 0 or 1.
    adv = apply(s_grpo(eps=0.0, weight_eps=weight_eps),
                [[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_array_equal(adv[0], 0.0)
    # Group 2: k = 1, n = 4, rbar = 0.25, t = 0.1875, t (1 - t) = 0.152344,
    # w* = 0.8 * 0.152344 / (sqrt(0.1875) * sqrt(0.152344)) = 0.721110;
    # GRPO: (1 - 0.25) / 0.5 = 1.5, so 1.081665.
    np.testing.assert_allclose(adv[1, 1], 1.081665, rtol=1e-5)

  def test_noise_rate_zero_recovers_grpo(self):
    # p = 0: w* = t(1 - t) / (t(1 - t) + 1e-8) ~= 1 for 0 < k < n.
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.5, (16, 8)).astype(np.float32)
    got = apply(s_grpo(noise_rate=0.0), r)
    ref = apply(A.grpo(eps=1e-8), r)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  def test_matches_numpy_loop_with_masks(self):
    rng = np.random.default_rng(1)
    r = rng.binomial(1, 0.4, (32, 8)).astype(np.float32)
    mask = rng.random((32, 8)) < 0.8
    mask[0] = False
    mask[1, 1:] = False  # singleton: w* = 0
    np.testing.assert_allclose(apply(s_grpo(), r, mask),
                               np_s_grpo(r, mask), rtol=1e-5, atol=1e-6)

  def test_success_threshold(self):
    # DAPO-style +-1 rewards: success iff r > 0 (the default threshold).
    r01 = np.array([[1, 0, 0, 1, 0, 0, 0, 0]], np.float32)
    pm1 = 2 * r01 - 1
    w = np_weight(2, 8, 0.1)
    # (r - mean) / std is the same for {0, 1} and {-1, +1} rewards.
    np.testing.assert_allclose(apply(s_grpo(), pm1),
                               w * apply(A.grpo(eps=1e-8), pm1), rtol=1e-5)
    # A threshold above every reward: k = 0, w* = 0.
    np.testing.assert_array_equal(
        apply(s_grpo(success_threshold=2.0), pm1), 0.0)

  def test_population_std_and_no_std(self):
    r = np.array([[1, 0, 0, 0]], np.float32)
    # k = 1, n = 4, p = 0.1: rbar = 0.25, t = 0.1875.
    w = np_weight(1, 4, 0.1)
    np.testing.assert_allclose(apply(s_grpo(norm_by_std=False), r),
                               w * np.array([[0.75, -0.25, -0.25, -0.25]]),
                               rtol=1e-5)
    np.testing.assert_allclose(
        apply(s_grpo(std="population"), r)[0, 0],
        w * 0.75 / (np.sqrt(0.1875) + 1e-8), rtol=1e-5)

  def test_traced_noise_rate_without_recompiling(self):
    tx = A.inject_hyperparams(s_grpo)(noise_rate=0.1)
    r = np.zeros((1, 8), np.float32)
    r[0, 0] = 1
    traces = []

    def f(r, state):
      traces.append(1)
      return tx.update(r, state)

    jf = jax.jit(f)
    state = tx.init(r)
    a, state = jf(r, state)
    np.testing.assert_allclose(a[0, 0], 1.041630, rtol=1e-5)
    state = state._replace(hyperparams={"noise_rate": jnp.float32(0.0)})
    b, state = jf(r, state)
    np.testing.assert_allclose(b, apply(A.grpo(eps=1e-8), r), rtol=1e-5)
    # A traced p >= 0.5 gives 0 (no information survives).
    state = state._replace(hyperparams={"noise_rate": jnp.float32(0.5)})
    c, _ = jf(r, state)
    np.testing.assert_array_equal(c, 0.0)
    self.assertLen(traces, 1)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"s_grpo: noise_rate must be in "
                                r"\[0, 0.5\)"):
      s_grpo(noise_rate=0.5)
    with self.assertRaisesRegex(ValueError, "noise_rate must be >= 0"):
      s_grpo(noise_rate=-0.1)
    with self.assertRaisesRegex(ValueError, "weight_eps must be >= 0"):
      s_grpo(weight_eps=-1.0)
    with self.assertRaisesRegex(ValueError, "std must be one of"):
      s_grpo(std="bessel")
    with self.assertRaisesRegex(ValueError, "s_grpo: rewards_BxG must have "
                                "rank 2"):
      apply(s_grpo(), np.zeros(8))


if __name__ == "__main__":
  absltest.main()
