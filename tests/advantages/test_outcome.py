"""Golden values for the outcome-level baselines, by hand and in plain numpy."""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def np_grpo(r, mask, *, ddof=1, eps=1e-6, singleton="zero"):
  """Per-group loop over valid entries, float64, as the loop peers do."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    vals = r[b][mask[b]]
    if len(vals) == 1:
      out[b][mask[b]] = vals / (1 + eps) if singleton == "raw" else 0
    elif len(vals) > 1:
      out[b][mask[b]] = (vals - vals.mean()) / (vals.std(ddof=ddof) + eps)
  return out


class GrpoTest(parameterized.TestCase):

  def test_hand_values_one_success_of_eight(self):
    # mean 1/8; unbiased std sqrt(((7/8)^2 + 7 (1/8)^2) / 7) = sqrt(1/8).
    # success: (7/8) / sqrt(1/8) = 2.4749; failure: -(1/8)/sqrt(1/8) = -0.3536.
    r = np.zeros((1, 8))
    r[0, 3] = 1
    adv = apply(A.grpo(eps=0.0), r)
    np.testing.assert_allclose(adv[0, 3], 2.4748737, rtol=1e-6)
    np.testing.assert_allclose(adv[0, 0], -0.35355339, rtol=1e-6)
    self.assertAlmostEqual(float(adv.sum()), 0.0, places=5)

  def test_hand_values_small_group(self):
    # [1, 0, 0, 0]: mean 0.25, unbiased std 0.5 -> [1.5, -0.5, -0.5, -0.5];
    # population std sqrt(0.1875) = 0.4330 -> 0.75 / 0.4330 = 1.7321.
    r = [[1.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(apply(A.grpo(eps=0.0), r),
                               [[1.5, -0.5, -0.5, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(
        apply(A.grpo(eps=0.0, std="population"), r)[0, 0], 1.7320508,
        rtol=1e-6)
    # eps under the square root: 0.75 / sqrt(0.25 + 0.01) = 1.4708.
    np.testing.assert_allclose(
        apply(A.grpo(eps=0.01, eps_placement="var"), r)[0, 0],
        0.75 / np.sqrt(0.26), rtol=1e-6)

  @parameterized.named_parameters(
      ("verl", "verl", dict(eps=1e-6, singleton="raw")),
      ("trl", "trl", dict(eps=1e-4, singleton="zero")),
  )
  def test_presets_match_numpy_loop(self, preset, conv):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.3, (16, 8)).astype(np.float32)
    r[:3] += rng.normal(size=(3, 8)).astype(np.float32)
    mask = rng.random((16, 8)) < 0.8
    mask[0] = False
    mask[0, 2] = True  # singleton
    mask[1] = True
    adv = apply(A.get("grpo", preset=preset), r, mask)
    np.testing.assert_allclose(adv, np_grpo(r, mask, **conv), rtol=1e-5,
                               atol=1e-6)

  def test_verl_singleton_is_raw_score_over_one_plus_eps(self):
    adv = apply(A.get("grpo", preset="verl"), [[0.7, 5.0]], [[True, False]])
    np.testing.assert_allclose(adv, [[0.7 / (1 + 1e-6), 0.0]], rtol=1e-7)
    # The default convention: a singleton carries no relative signal.
    adv = apply(A.grpo(), [[0.7, 5.0]], [[True, False]])
    np.testing.assert_array_equal(adv, [[0.0, 0.0]])

  def test_eps_reaches_the_computation(self):
    r = [[1.0, 1.0 + 1e-5, 1.0, 1.0 - 1e-5]]
    a = apply(A.grpo(eps=1e-6), r)
    b = apply(A.grpo(eps=1e-4), r)
    self.assertGreater(np.abs(a - b).max(), 1e-2)

  def test_low_variance_groups_with_large_offset_float32(self):
    # verl-project/verl#6348: E[x^2] - E[x]^2 in float32 plus a variance floor
    # shrank such groups; two-pass statistics match a float64 loop.
    rng = np.random.default_rng(1)
    r = (1000.0 + 1e-3 * rng.normal(size=(32, 8))).astype(np.float32)
    adv = apply(A.grpo(), r)
    ref = np_grpo(r.astype(np.float64), np.ones(r.shape, bool))
    np.testing.assert_allclose(adv, ref, rtol=1e-3, atol=1e-3)
    self.assertGreater(np.abs(adv).max(), 0.5)

  def test_verl_vectorized_preset_floors_std(self):
    r = [[0.0, 1e-4, 0.0, 1e-4]]  # std ~ 5.8e-5 < 1e-3
    adv = apply(A.get("grpo", preset="verl_vectorized"), r)
    np.testing.assert_allclose(adv[0, 1], 5e-5 / (1e-3 + 1e-6), rtol=1e-4)

  def test_no_std_is_exactly_centering(self):
    # verl-project/verl#7893: the flag must change the output.
    rng = np.random.default_rng(2)
    r = rng.normal(size=(4, 6)).astype(np.float32)
    adv = apply(A.grpo(norm_by_std=False), r)
    np.testing.assert_array_equal(adv, apply(A.dr_grpo(), r))
    np.testing.assert_allclose(adv, r - r.mean(1, keepdims=True), atol=1e-6)
    self.assertGreater(np.abs(adv - apply(A.grpo(), r)).max(), 1e-3)

  def test_equals_center_then_scale(self):
    rng = np.random.default_rng(3)
    r = rng.normal(size=(4, 6)).astype(np.float32)
    mask = rng.random((4, 6)) < 0.7
    chained = A.chain(A.center(), A.scale())
    np.testing.assert_allclose(apply(chained, r, mask),
                               apply(A.grpo(), r, mask), rtol=1e-6, atol=1e-7)


class RlooTest(parameterized.TestCase):

  def test_hand_values(self):
    # A_i = r_i - mean of the others: 1 - 0 = 1; 0 - 1/3 = -1/3.
    np.testing.assert_allclose(apply(A.rloo(), [[1.0, 0.0, 0.0, 0.0]]),
                               [[1.0, -1 / 3, -1 / 3, -1 / 3]], rtol=1e-6)

  def test_leave_one_out_definition_with_padding(self):
    rng = np.random.default_rng(4)
    r = rng.normal(size=(5, 6))
    mask = rng.random((5, 6)) < 0.8
    mask[:, :2] = True
    adv = apply(A.rloo(), r, mask)
    for b in range(5):
      idx = np.flatnonzero(mask[b])
      for i in idx:
        others = [r[b, j] for j in idx if j != i]
        np.testing.assert_allclose(adv[b, i], r[b, i] - np.mean(others),
                                   rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(("zero", "zero", 0.0), ("raw", "raw", 0.7))
  def test_singleton(self, policy, expected):
    adv = apply(A.rloo(singleton=policy), [[0.7, 3.0]], [[True, False]])
    np.testing.assert_allclose(adv, [[expected, 0.0]], rtol=1e-6)


class OtherBaselinesTest(parameterized.TestCase):

  def test_opo_length_weighted_baseline(self):
    # b = (2*1 + 4*0 + 6*1) / 12 = 2/3 -> [1/3, -2/3, 1/3].
    adv = apply(A.opo(), [[1.0, 0.0, 1.0]], lengths_BxG=np.array([[2, 4, 6]]))
    np.testing.assert_allclose(adv, [[1 / 3, -2 / 3, 1 / 3]], rtol=1e-6)

  def test_opo_lengths_from_token_mask(self):
    tm = np.arange(6)[None, None, :] < np.array([[2, 4, 6]])[..., None]
    adv = apply(A.opo(), [[1.0, 0.0, 1.0]], token_mask_BxGxT=tm)
    np.testing.assert_allclose(adv, [[1 / 3, -2 / 3, 1 / 3]], rtol=1e-6)

  def test_gpg_batch_rescale(self):
    # N = 8 valid, 1 non-zero -> alpha = 8; group 0 mean 0.25.
    adv = apply(A.gpg(), [[1.0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(adv, [[6.0, -2, -2, -2], [0, 0, 0, 0]],
                               rtol=1e-6)
    # Masked samples count in neither N nor the non-zero count.
    adv = apply(A.gpg(), [[1.0, 0, 0, 9], [0, 0, 0, 0]],
                [[True, True, True, False], [True] * 4])
    np.testing.assert_allclose(adv[0], [7 * 2 / 3, -7 / 3, -7 / 3, 0],
                               rtol=1e-6)

  def test_grpo_passk(self):
    # Best 3, second 2: margin 1; unbiased std of [3, 1, 2, 0] = sqrt(5/3).
    adv = apply(A.grpo_passk(), [[3.0, 1, 2, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(adv[0], [1 / (np.sqrt(5 / 3) + 1e-6), 0, 0, 0],
                               rtol=1e-6)
    np.testing.assert_array_equal(adv[1], 0)  # tie at the maximum
    adv = apply(A.grpo_passk(norm_by_std=False), [[3.0, 1, 2, 0]])
    np.testing.assert_allclose(adv, [[1.0, 0, 0, 0]])
    # The best *valid* sample; a group with one valid sample gives 0.
    adv = apply(A.grpo_passk(norm_by_std=False), [[3.0, 1, 2, 0], [5, 1, 1, 1]],
                [[False, True, True, True], [True, False, False, False]])
    np.testing.assert_allclose(adv, [[0, 0, 1.0, 0], [0, 0, 0, 0]])

  def test_batch_std(self):
    # Batch unbiased std of [1, 0, 1, 1] is 0.5; group 0 mean 0.5.
    adv = apply(A.batch_std(), [[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(adv, [[0.5 / 0.5001, -0.5 / 0.5001], [0, 0]],
                               rtol=1e-6)

  def test_remax(self):
    adv = apply(A.remax(), [[1.0, 0.0], [0.0, 1.0]],
                greedy_rewards_B=np.array([1.0, 0.0], np.float32))
    np.testing.assert_array_equal(adv, [[0.0, -1.0], [0.0, 1.0]])

  def test_gdpo_matches_numpy(self):
    rng = np.random.default_rng(5)
    r = rng.binomial(1, 0.5, (4, 5, 3)).astype(np.float32)
    r[..., 2] = rng.normal(size=(4, 5))
    r[0, :, 1] = np.nan  # function 1 does not apply to prompt 0
    r[1, 2, :] = np.nan  # an unscorable sample
    r[2, 0, 0] = np.nan
    w = (1.0, 0.5, 2.0)
    adv = apply(A.gdpo(weights=w), r)
    # Plain numpy: nanmean / nanstd(ddof=1) per group and function.
    with warnings.catch_warnings():  # prompt 0 has no value for function 1
      warnings.simplefilter("ignore", RuntimeWarning)
      mean = np.nanmean(r, axis=1, keepdims=True)
    cnt = np.sum(~np.isnan(r), axis=1, keepdims=True)
    var = np.nansum((r - mean) ** 2, axis=1, keepdims=True) / np.maximum(
        cnt - 1, 1)
    z = np.nan_to_num((r - mean) / (np.sqrt(var) + 1e-4))
    s = (z * np.array(w)).sum(-1)
    scorable = ~np.all(np.isnan(r), axis=-1)
    sv = s[scorable]
    ref = np.where(scorable, (s - sv.mean()) / (sv.std(ddof=1) + 1e-4), 0)
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-6)
    self.assertEqual(adv[1, 2], 0.0)

  def test_gdpo_single_function_is_batch_zscore_of_grpo(self):
    rng = np.random.default_rng(6)
    r = rng.normal(size=(4, 5, 1)).astype(np.float32)
    z = apply(A.grpo(eps=1e-4), r[..., 0])
    ref = (z - z.mean()) / (z.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(apply(A.gdpo(), r), ref, rtol=1e-5, atol=1e-6)


class PiecesTest(parameterized.TestCase):

  def test_center(self):
    np.testing.assert_allclose(apply(A.center(), [[1.0, 2.0, 6.0]]),
                               [[-2.0, -1.0, 3.0]])

  def test_scale_group_and_batch(self):
    r = np.array([[1.0, 3.0], [0.0, 4.0]], np.float32)
    # Group stds (unbiased): sqrt(2), sqrt(8).
    np.testing.assert_allclose(apply(A.scale(eps=0.0), r),
                               r / np.array([[2 ** .5], [8 ** .5]]),
                               rtol=1e-6)
    np.testing.assert_allclose(apply(A.scale(level="batch", eps=0.0), r),
                               r / r.std(ddof=1), rtol=1e-6)

  def test_batch_whiten_sequence_and_token_level(self):
    r = np.array([[1.0, 2.0], [3.0, 10.0]], np.float32)
    mask = np.array([[True, True], [True, False]])
    valid = r[mask]
    ref = (r - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(apply(A.batch_whiten(), r, mask),
                               np.where(mask, ref, 0), rtol=1e-6)
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    tm = np.array([[[True, True, False, False], [True, True, True, True]]])
    v = x[tm]
    ref = np.where(tm, (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0)
    np.testing.assert_allclose(apply(A.batch_whiten(), x,
                                     token_mask_BxGxT=tm), ref, rtol=1e-6)
    no_shift = apply(A.batch_whiten(shift_mean=False), x, token_mask_BxGxT=tm)
    np.testing.assert_allclose(no_shift, np.where(tm, ref + v.mean(), 0),
                               rtol=1e-6)

  def test_clip(self):
    r = [[-3.0, -0.5, 0.5, 3.0]]
    np.testing.assert_array_equal(apply(A.clip(max_abs=1.0), r),
                                  [[-1.0, -0.5, 0.5, 1.0]])
    np.testing.assert_array_equal(apply(A.clip(low=0.0), r),
                                  [[0.0, 0.0, 0.5, 3.0]])
    with self.assertRaisesRegex(ValueError, "low"):
      A.clip(low=1.0, high=0.0)
    with self.assertRaisesRegex(ValueError, "max_abs"):
      A.clip()


class DtypeTest(absltest.TestCase):

  def test_bfloat16_in_bfloat16_out(self):
    r = jnp.asarray([[1.0, 0.0, 1.0, 0.0]], jnp.bfloat16)
    adv, _ = A.grpo().update(r, A.EmptyState())
    self.assertEqual(adv.dtype, jnp.bfloat16)

  def test_float64(self):
    with jax.enable_x64(True):
      r = np.array([[1.0, 0.0, 0.0, 0.0]], np.float64)
      adv = apply(A.grpo(eps=0.0), r.astype(np.float32))
      adv64, _ = A.grpo(eps=0.0).update(jnp.asarray(r), A.EmptyState())
      self.assertEqual(adv64.dtype, jnp.float64)
      np.testing.assert_allclose(adv64, [[1.5, -0.5, -0.5, -0.5]], rtol=1e-12)
      del adv


if __name__ == "__main__":
  absltest.main()
