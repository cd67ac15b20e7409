"""AAPO (arXiv 2505.14264): z-score plus clipped paired reward gap."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _est_aapo

aapo = _est_aapo.aapo


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  ctx = {k: np.asarray(v, np.float32) for k, v in ctx.items()}
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def np_aapo(r, ref, mask, *, eps=1e-4, lo=0.2, hi=0.28):
  """Per-group loop in float64, TRL conventions (singleton z-score 0)."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    m = mask[b]
    vals = r[b][m]
    z = np.zeros_like(vals)
    if len(vals) > 1:
      z = (vals - vals.mean()) / (vals.std(ddof=1) + eps)
    out[b][m] = z + np.clip(vals - ref[b][m], -lo, hi)
  return out


class AapoTest(parameterized.TestCase):

  def test_hand_values(self):
    # r = [1, 0, 0, 0]: mean 0.25, unbiased std 0.5 -> z = [1.5, -.5, -.5,
    # -.5]. Gaps r - r_ref = [1, 0, -1, -0.1] clip to [0.28, 0, -0.2, -0.1].
    adv = apply(aapo(eps=0.0), [[1, 0, 0, 0]],
                ref_rewards_BxG=[[0, 0, 1, 0.1]])
    np.testing.assert_allclose(adv, [[1.78, -0.5, -0.7, -0.6]], rtol=1e-6)

  def test_homogeneous_group_keeps_the_momentum(self):
    # z = 0; gaps [0, 1, 0.1, -0.5] -> [0, 0.28, 0.1, -0.2].
    adv = apply(aapo(), [[1, 1, 1, 1]], ref_rewards_BxG=[[1, 0, 0.9, 1.5]])
    np.testing.assert_allclose(adv, [[0, 0.28, 0.1, -0.2]], rtol=1e-6,
                               atol=1e-7)

  def test_paired_by_position_not_by_group_mean(self):
    r = [[1.0, 0.0, 0.5, 0.5]]
    a1 = apply(aapo(norm_by_std=False), r, ref_rewards_BxG=[[0, 1, .5, .5]])
    a2 = apply(aapo(norm_by_std=False), r, ref_rewards_BxG=[[1, 0, .5, .5]])
    # centred r = [0.5, -0.5, 0, 0]; gaps [1, -1, 0, 0] vs [0, 0, 0, 0].
    np.testing.assert_allclose(a1, [[0.78, -0.7, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(a2, [[0.5, -0.5, 0, 0]], rtol=1e-6)

  def test_custom_clip_bounds(self):
    adv = apply(aapo(delta_low=0.5, delta_high=0.1), [[2, 2]],
                ref_rewards_BxG=[[0, 3]])
    np.testing.assert_allclose(adv, [[0.1, -0.5]], rtol=1e-6)

  def test_matches_numpy_loop_with_masks(self):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.4, (16, 6)).astype(np.float32)
    r[:4] += rng.normal(size=(4, 6)).astype(np.float32)
    ref = rng.uniform(-0.5, 1.5, (16, 6)).astype(np.float32)
    mask = rng.random((16, 6)) < 0.8
    mask[0] = False
    mask[0, 3] = True  # singleton
    mask[1] = False  # empty
    adv = apply(aapo(), r, mask, ref_rewards_BxG=ref)
    np.testing.assert_allclose(adv, np_aapo(r, ref, mask), rtol=1e-5,
                               atol=1e-6)

  def test_edges(self):
    r = [[0.7, 0.7, 0.7], [0.3, 5.0, 5.0], [1.0, 2.0, 3.0]]
    ref = [[0.7, 0.7, 0.7], [0.2, np.nan, np.inf], [np.nan, np.nan, np.inf]]
    mask = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    adv = apply(aapo(), r, mask, ref_rewards_BxG=ref)
    self.assertTrue(np.isfinite(adv).all())
    # All equal, no gap -> 0; singleton -> the momentum 0.1 only; padded and
    # fully masked -> 0 whatever their reference reward.
    np.testing.assert_allclose(adv, [[0, 0, 0], [0.1, 0, 0], [0, 0, 0]],
                               atol=1e-6)
    adv = apply(aapo(singleton="raw"), r, mask, ref_rewards_BxG=ref)
    np.testing.assert_allclose(adv[1, 0], 0.3 / (1 + 1e-4) + 0.1, rtol=1e-6)

  def test_jit_and_missing_or_bad_reference(self):
    r = np.zeros((2, 4), np.float32)
    tx = aapo()
    with self.assertRaisesRegex(A.MissingContextError,
                                "aapo needs the context input ref_rewards_BxG"):
      jax.jit(tx.update)(r, tx.init(r))
    with self.assertRaisesRegex(ValueError, r"aapo: ref_rewards_BxG must have "
                                r"shape \[B, G\] = \(2, 4\), got \(2, 3\)"):
      tx.update(r, tx.init(r), ref_rewards_BxG=np.zeros((2, 3), np.float32))
    with self.assertRaisesRegex(TypeError, "ref_rewards_BxG must be a float"):
      tx.update(r, tx.init(r), ref_rewards_BxG=np.zeros((2, 4), np.int32))
    with self.assertRaisesRegex(ValueError, "aapo: delta_low must be >= 0"):
      aapo(delta_low=-0.2)
    with self.assertRaisesRegex(ValueError, "aapo: std must be one of"):
      aapo(std="bessel")

  def test_registered(self):
    info = A.info("aapo")
    self.assertEqual((info.min_group_size, info.requires, info.stateful),
                     (2, ("ref_rewards_BxG",), False))


if __name__ == "__main__":
  absltest.main()
