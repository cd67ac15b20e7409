"""MAPO (arXiv 2509.18849): certainty-weighted z-score / percent deviation."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _est_mapo

mapo = _est_mapo.mapo


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


def np_mapo_release(r, *, variant="pro", eps=1e-6):
  """The release's formulas, per group in float64 (all rows valid)."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b, vals in enumerate(r):
    p = np.mean(vals == 1.0)
    lam = (1 - 4 * p * (1 - p) if variant == "pro"
           else 1 - 2 * min(p, 1 - p))
    mu = vals.mean()
    a_std = (vals - mu) / (vals.std(ddof=1) + eps)
    a_mean = (vals - mu) / (mu + eps)
    out[b] = (1 - lam) * a_std + lam * a_mean
  return out


class MapoTest(parameterized.TestCase):

  def test_hand_values_pro_and_air(self):
    # r = [1, 0, 0, 0]: p = 1/4, mean 1/4, unbiased std 1/2.
    # z = [1.5, -0.5, ...]; percent deviation (r - mu) / mu = [3, -1, ...].
    # pro: lam = 1 - 4 (1/4)(3/4) = 1/4 -> 0.75 z + 0.25 d = [1.875, -0.625].
    # air: lam = 1 - 2 min(1/4, 3/4) = 1/2 -> [2.25, -0.75].
    r = [[1.0, 0.0, 0.0, 0.0]]
    kw = dict(eps=0.0, mean_floor=0.0)
    np.testing.assert_allclose(apply(mapo(variant="pro", **kw), r),
                               [[1.875, -0.625, -0.625, -0.625]], rtol=1e-6)
    np.testing.assert_allclose(apply(mapo(variant="air", **kw), r),
                               [[2.25, -0.75, -0.75, -0.75]], rtol=1e-6)

  def test_half_certain_group_is_the_z_score(self):
    # p = 1/2 -> lam = 0 for both variants: plain GRPO.
    r = [[1.0, 0.0, 1.0, 0.0, 0.1, 1.0, 0.9, 1.0]]
    for variant in ("pro", "air"):
      np.testing.assert_allclose(apply(mapo(variant=variant), r),
                                 apply(A.grpo(), r), rtol=1e-6)

  def test_certain_group_is_the_percent_deviation(self):
    # No exact 1.0 (p = 0, lam = 1): r = [0.1, 0, 0, 0.9], mean 0.25.
    r = [[0.1, 0.0, 0.0, 0.9]]
    np.testing.assert_allclose(
        apply(mapo(), r),
        [[-0.15 / (0.25 + 1e-6), -0.25 / (0.25 + 1e-6), -0.25 / (0.25 + 1e-6),
          0.65 / (0.25 + 1e-6)]], rtol=1e-6)
    # All correct (p = 1) and all zero: numerator 0 -> 0.
    np.testing.assert_array_equal(apply(mapo(), np.ones((1, 6))), 0)
    np.testing.assert_array_equal(apply(mapo(), np.zeros((1, 6))), 0)

  @parameterized.parameters("pro", "air")
  def test_matches_release_formulas_on_easyr1_rewards(self, variant):
    # 0.9 accuracy + 0.1 format; G = 12 (the scripts' rollout.n). The mean
    # of a non-zero group is >= 0.1 / 12 > mean_floor, so the guard is idle.
    rng = np.random.default_rng(0)
    acc = rng.random((32, 12)) < rng.random((32, 1))
    fmt = rng.random((32, 12)) < 0.8
    r = (0.9 * acc + 0.1 * fmt).astype(np.float32)
    r[0] = 0.0
    r[0, 5] = 0.1  # one format-only reward: mean 0.0083, deviation 11
    adv = apply(mapo(variant=variant), r)
    np.testing.assert_allclose(adv, np_mapo_release(r, variant=variant),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv[0, 5], 11.0, rtol=1e-3)

  def test_division_hazards_stay_finite(self):
    r = [[1e-5, 0.0, 0.0, 0.0],  # partial credit, tiny mean 2.5e-6
         [0.5, -0.5, 0.0, 0.0],  # mixed signs, mean exactly 0
         [-1.0, -1.0, 0.0, -1.0],  # negative mean -0.75
         [0.3, 9.0, 9.0, 9.0],  # singleton
         [2.0, 2.0, 2.0, 2.0]]  # fully masked
    mask = np.ones((5, 4), bool)
    mask[3, 1:] = False
    mask[4] = False
    adv = apply(mapo(), r, mask)
    self.assertTrue(np.isfinite(adv).all())
    # Tiny mean: floored at 1e-3 -> 7.5e-6 / (1e-3 + 1e-6).
    np.testing.assert_allclose(adv[0, 0], 7.5e-6 / 1.001e-3, rtol=1e-4)
    # Zero mean: 0.5 / (1e-3 + 1e-6), sign kept.
    np.testing.assert_allclose(adv[1, :2], [0.5 / 1.001e-3, -0.5 / 1.001e-3],
                               rtol=1e-5)
    # Negative mean: |mu| keeps the sign of r - mu (the 0 reward is best).
    np.testing.assert_allclose(adv[2], [-1 / 3, -1 / 3, 1.0, -1 / 3],
                               rtol=1e-5)
    np.testing.assert_array_equal(adv[3:], 0)
    # No floor and no eps: a zero denominator gives 0, not NaN.
    adv = apply(mapo(mean_floor=0.0, eps=0.0), r[1:2])
    np.testing.assert_array_equal(adv, 0)
    # mean_floor = 0: the release's (r - mu) / (mu + 1e-6) for mu >= 0.
    np.testing.assert_allclose(apply(mapo(mean_floor=0.0), r[:1]),
                               np_mapo_release(r[:1]), rtol=1e-4)

  def test_success_tolerance(self):
    r = [[0.9999999, 0.0]]  # not == 1.0 in float32 -> p = 0, lam = 1
    a_exact = apply(mapo(eps=0.0, mean_floor=0.0), r)
    a_tol = apply(mapo(eps=0.0, mean_floor=0.0, success_tol=1e-6), r)
    np.testing.assert_allclose(a_exact, [[1.0, -1.0]], rtol=1e-5)  # d
    # p = 1/2 -> lam = 0: z-score (r - mu) / std = +-0.5 / 0.7071.
    np.testing.assert_allclose(a_tol, [[0.70710677, -0.70710677]], rtol=1e-5)

  def test_bad_arguments_name_them(self):
    with self.assertRaisesRegex(ValueError, "mapo: variant must be one of"):
      mapo(variant="rand")
    with self.assertRaisesRegex(ValueError, "mapo: mean_floor must be >= 0"):
      mapo(mean_floor=-1.0)
    with self.assertRaisesRegex(ValueError, "mapo: success_tol must be >= 0"):
      mapo(success_tol=-1e-3)
    with self.assertRaisesRegex(ValueError, "mapo: std must be one of"):
      mapo(std="bessel")
    with self.assertRaisesRegex(TypeError, "mapo: rewards_BxG must be a float"):
      mapo().update(np.zeros((1, 4), np.int32), A.EmptyState())

  def test_registered(self):
    info = A.info("mapo")
    self.assertEqual((info.min_group_size, info.requires, info.stateful),
                     (2, (), False))


if __name__ == "__main__":
  absltest.main()
