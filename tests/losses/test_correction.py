"""Rollout correction: IS weights, rejection masks and OPSM."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _correction as corr

LN = np.log


def _case():
  """One prompt, two samples, three tokens; the last token of row 1 is pad."""
  # Ratios pi_old / pi_rollout: row 0 [4, 0.25, 1.5]; row 1 [3, 2, pad].
  sampling = np.array([[[-1.0, -2.0, -0.5], [-0.7, -1.1, -3.0]]])
  old = sampling + np.array([[[LN(4), LN(0.25), LN(1.5)],
                              [LN(3), LN(2), 50.0]]])
  mask = np.array([[[True, True, True], [True, True, False]]])
  return old.astype(np.float32), sampling.astype(np.float32), mask


def _np_weights(old, sampling, mask, level, mode, clip_max, clip_min,
                batch_normalize):
  """Plain numpy: ratio, then clamp or mask, then the verl normalisation."""
  delta = np.where(mask, old - sampling, 0.0).astype(np.float64)
  if level == "sequence":
    delta = np.broadcast_to(delta.sum(-1, keepdims=True), delta.shape)
  ratio = np.exp(delta)
  lo = 0.0 if clip_min is None else clip_min
  if mode == "truncate":
    w = np.clip(ratio, lo, clip_max)
  else:
    w = np.where((ratio >= lo) & (ratio <= clip_max), ratio, 0.0)
  w = np.where(mask, w, 0.0)
  if batch_normalize:
    if level == "token":
      mean = w[mask].mean()
    else:
      valid = mask.any(-1)
      mean = (w.sum(-1)[valid] / mask.sum(-1)[valid]).mean()
    if mean > 1e-8:
      w = w / mean
  return w


def _random(seed=0, b=3, g=4, t=6, scale=0.4):
  rng = np.random.default_rng(seed)
  sampling = rng.normal(size=(b, g, t)) - 2.0
  old = sampling + scale * rng.normal(size=(b, g, t))
  lengths = rng.integers(0, t + 1, size=(b, g))
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  return old.astype(np.float32), sampling.astype(np.float32), mask


OPTIONS = [
    (f"{lv}_{md}_{'min' if mn else 'nomin'}_{'bn' if bn else 'raw'}",
     lv, md, mn, bn)
    for lv, md, mn, bn in itertools.product(
        corr.IS_LEVELS, corr.IS_MODES, (None, 0.5), (False, True))]


class ImportanceWeightsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Token ratios [4, .25, 1.5 | 3, 2, pad]; C_max = 2.
      ("token_truncate", "token", "truncate", None,
       [[2.0, 0.25, 1.5], [2.0, 2.0, 0.0]]),
      ("token_truncate_min", "token", "truncate", 0.5,
       [[2.0, 0.5, 1.5], [2.0, 2.0, 0.0]]),
      # MIS keeps the ratio itself inside [C_min, C_max] (2 <= 2 is kept).
      ("token_mask", "token", "mask", None,
       [[0.0, 0.25, 1.5], [0.0, 2.0, 0.0]]),
      ("token_mask_min", "token", "mask", 0.5,
       [[0.0, 0.0, 1.5], [0.0, 2.0, 0.0]]),
      # Sequence ratios: 4 * .25 * 1.5 = 1.5; 3 * 2 = 6 (the pad is ignored).
      ("sequence_truncate", "sequence", "truncate", None,
       [[1.5, 1.5, 1.5], [2.0, 2.0, 0.0]]),
      ("sequence_mask", "sequence", "mask", 0.5,
       [[1.5, 1.5, 1.5], [0.0, 0.0, 0.0]]),
  )
  def test_golden(self, level, mode, clip_min, expected):
    old, sampling, mask = _case()
    w, _ = corr.importance_weights(old, sampling, mask, level=level,
                                   mode=mode, clip_max=2.0, clip_min=clip_min)
    np.testing.assert_allclose(w, np.array([expected]), rtol=1e-6)

  def test_trl_threshold(self):
    # TRL's clip_max = 3.0: token ratios 4 -> 3 and 3 stays 3.
    old, sampling, mask = _case()
    w, _ = corr.importance_weights(old, sampling, mask, clip_max=3.0)
    np.testing.assert_allclose(w[0, :, 0], [3.0, 3.0], rtol=1e-6)

  def test_defaults_are_verl_token_truncate_2(self):
    old, sampling, mask = _case()
    w, _ = corr.importance_weights(old, sampling, mask)
    ref = _np_weights(old, sampling, mask, "token", "truncate", 2.0, None,
                      False)
    np.testing.assert_allclose(w, ref, rtol=1e-6)

  @parameterized.named_parameters(*OPTIONS)
  def test_matches_numpy(self, level, mode, clip_min, batch_normalize):
    old, sampling, mask = _random()
    w, _ = corr.importance_weights(old, sampling, mask, level=level,
                                   mode=mode, clip_max=1.5, clip_min=clip_min,
                                   batch_normalize=batch_normalize)
    ref = _np_weights(old, sampling, mask, level, mode, 1.5, clip_min,
                      batch_normalize)
    np.testing.assert_allclose(w, ref, rtol=2e-5, atol=1e-6)

  def test_batch_normalize_means(self):
    # Truncated token weights [2, .25, 1.5, 2, 2]: mean 7.75 / 5 = 1.55.
    old, sampling, mask = _case()
    w, _ = corr.importance_weights(old, sampling, mask, batch_normalize=True)
    np.testing.assert_allclose(w[0, 0], np.array([2, 0.25, 1.5]) / 1.55,
                               rtol=1e-6)
    np.testing.assert_allclose(np.mean(np.asarray(w)[mask]), 1.0, rtol=1e-6)
    # Sequence level: per-sequence weights 1.5 and 2, mean 1.75 over
    # sequences (not over tokens, which would give 8.5 / 5 = 1.7).
    w, _ = corr.importance_weights(old, sampling, mask, level="sequence",
                                   batch_normalize=True)
    np.testing.assert_allclose(w[0, :, 0], np.array([1.5, 2.0]) / 1.75,
                               rtol=1e-6)

  def test_batch_normalize_all_zero_weights_stay_zero(self):
    old, sampling, mask = _case()
    w, _ = corr.importance_weights(old + 10, sampling, mask, mode="mask",
                                   batch_normalize=True)
    np.testing.assert_array_equal(w, np.zeros_like(w))

  def test_metrics(self):
    old, sampling, mask = _case()
    _, m = corr.importance_weights(old, sampling, mask, clip_max=2.0,
                                   clip_min=0.5)
    # 5 valid tokens; ratios 4 and 3 are > 2, ratio .25 is < .5.
    np.testing.assert_allclose(m["is_frac_high"].value, 2 / 5)
    np.testing.assert_allclose(m["is_frac_low"].value, 1 / 5)
    np.testing.assert_allclose(m["is_weight_mean"].value,
                               (2 + 0.5 + 1.5 + 2 + 2) / 5, rtol=1e-6)
    deltas = np.log([4, 0.25, 1.5, 3, 2])
    np.testing.assert_allclose(m["mismatch_kl"].value, -deltas.mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(m["mismatch_k3"].value,
                               np.mean(np.exp(deltas) - 1 - deltas),
                               rtol=1e-5)
    self.assertEqual(float(m["is_frac_high"].weight), 5.0)

  def test_no_overflow_on_long_sequences(self):
    # A summed log-ratio of 400 overflows exp in float32 (and in float64).
    sampling = np.zeros((1, 1, 8), np.float32)
    old = np.full((1, 1, 8), 50.0, np.float32)
    mask = np.ones((1, 1, 8), bool)
    w, m = corr.importance_weights(old, sampling, mask, level="sequence")
    np.testing.assert_allclose(w, np.full((1, 1, 8), 2.0))
    w, _ = corr.importance_weights(-old, sampling, mask, level="sequence",
                                   clip_min=0.5)
    np.testing.assert_allclose(w, np.full((1, 1, 8), 0.5))
    w, _ = corr.importance_weights(old, sampling, mask, level="sequence",
                                   mode="mask")
    np.testing.assert_array_equal(w, np.zeros((1, 1, 8)))
    for d in m.values():
      self.assertTrue(np.isfinite(d.value))

  @parameterized.named_parameters(*OPTIONS)
  def test_masked_tokens_change_nothing(self, level, mode, clip_min,
                                        batch_normalize):
    old, sampling, mask = _random(1)
    kw = dict(level=level, mode=mode, clip_max=1.5, clip_min=clip_min,
              batch_normalize=batch_normalize)
    w1, m1 = corr.importance_weights(old, sampling, mask, **kw)
    old2 = np.where(mask, old, np.nan).astype(np.float32)
    sampling2 = np.where(mask, sampling, 1e4).astype(np.float32)
    w2, m2 = corr.importance_weights(old2, sampling2, mask, **kw)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(np.asarray(w1)[~mask], 0.0)
    for key in m1:
      np.testing.assert_array_equal(m1[key].total, m2[key].total)
      np.testing.assert_array_equal(m1[key].weight, m2[key].weight)

  @parameterized.parameters("token", "sequence")
  def test_weights_carry_no_gradient(self, level):
    # Bypass mode: old_logp is the current policy's logp. The gradient of
    # sum(w * logp) must be w itself, with w held constant.
    with jax.enable_x64(True):
      old, sampling, mask = _random(2)
      logp = jnp.asarray(old, jnp.float64)
      sampling = jnp.asarray(sampling, jnp.float64)

      def f(lp, sp):
        w, _ = corr.importance_weights(lp, sp, mask, level=level,
                                       clip_max=1.5, batch_normalize=True)
        return jnp.sum(w * lp)

      g_logp, g_sampling = jax.grad(f, argnums=(0, 1))(logp, sampling)
      w, _ = corr.importance_weights(logp, sampling, mask, level=level,
                                     clip_max=1.5, batch_normalize=True)
      np.testing.assert_allclose(g_logp, w, rtol=1e-12)
      np.testing.assert_array_equal(g_sampling, np.zeros_like(g_sampling))

  @parameterized.named_parameters(*OPTIONS)
  def test_jit_equals_eager_with_traced_bounds(self, level, mode, clip_min,
                                               batch_normalize):
    old, sampling, mask = _random(3)

    def f(cmax, cmin):
      return corr.importance_weights(
          old, sampling, mask, level=level, mode=mode, clip_max=cmax,
          clip_min=None if clip_min is None else cmin,
          batch_normalize=batch_normalize)

    eager = f(1.5, 0.5)
    jitted = jax.jit(f)(1.5, 0.5)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6)
    for k in eager[1]:
      np.testing.assert_allclose(jitted[1][k].value, eager[1][k].value,
                                 rtol=1e-6)

  def test_errors(self):
    old, sampling, mask = _case()
    with self.assertRaisesRegex(ValueError, "level must be one of"):
      corr.importance_weights(old, sampling, mask, level="seq")
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      corr.importance_weights(old, sampling, mask, mode="clip")
    with self.assertRaisesRegex(ValueError, "clip_max must be > 0"):
      corr.importance_weights(old, sampling, mask, clip_max=0.0)
    with self.assertRaisesRegex(ValueError, "clip_min must be >= 0"):
      corr.importance_weights(old, sampling, mask, clip_min=-1.0)
    with self.assertRaisesRegex(ValueError, "clip_min must be < clip_max"):
      corr.importance_weights(old, sampling, mask, clip_min=2.0)
    with self.assertRaisesRegex(ValueError, "sampling_logp_BxGxT must have"):
      corr.importance_weights(old, sampling[..., :2], mask)
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      corr.importance_weights(old, sampling, mask.astype(np.float32))
    with self.assertRaisesRegex(TypeError, "old_logp_BxGxT must be a float"):
      corr.importance_weights(old.astype(np.int32), sampling, mask)


def _np_rejection(old, sampling, mask, mode, upper, lower):
  x = np.where(mask, old - sampling, 0.0).astype(np.float64)
  level, est = mode.rsplit("_", 1)
  if est == "k1":
    k = x
  elif est == "k2":
    k = 0.5 * x ** 2
  else:
    k = np.exp(x) - 1 - x
  k = np.where(mask, k, 0.0)
  n = np.maximum(mask.sum(-1, keepdims=True), 1)
  stat = {"token": k, "seq_sum": k.sum(-1, keepdims=True),
          "seq_mean": k.sum(-1, keepdims=True) / n,
          "seq_max": k.max(-1, keepdims=True)}[level]
  if est == "k1":
    lower = 1 / upper if lower is None else lower
    keep = (np.exp(stat) >= lower) & (np.exp(stat) <= upper)
  else:
    keep = stat <= upper
  return mask & np.broadcast_to(keep, mask.shape)


class RejectionMaskTest(parameterized.TestCase):

  @staticmethod
  def _hand():
    # Log-ratios x: row 0 [0.1, -0.2, 0.3]; row 1 [1.0, 0.0, pad 5.0].
    x = np.array([[[0.1, -0.2, 0.3], [1.0, 0.0, 5.0]]])
    sampling = np.full_like(x, -1.0)
    mask = np.array([[[True, True, True], [True, True, False]]])
    return (sampling + x).astype(np.float32), sampling.astype(
        np.float32), mask

  @parameterized.named_parameters(
      # Ratio bounds [1/1.2, 1.2] = log [-0.182, 0.182].
      ("token_k1", "token_k1", 1.2, None,
       [[True, False, False], [False, True, False]]),
      # Explicit bounds [0.8, 1.5] = log [-0.223, 0.405].
      ("token_k1_low", "token_k1", 1.5, 0.8,
       [[True, True, True], [False, True, False]]),
      # Sequence sums 0.2 and 1.0 against log 1.5 = 0.405.
      ("seq_sum_k1", "seq_sum_k1", 1.5, None,
       [[True, True, True], [False, False, False]]),
      # Means 0.0667 and 0.5 against log 1.1 = 0.0953.
      ("seq_mean_k1", "seq_mean_k1", 1.1, None,
       [[True, True, True], [False, False, False]]),
      # k2 = [.005, .02, .045 | .5, 0]; token bound 0.03.
      ("token_k2", "token_k2", 0.03, None,
       [[True, True, False], [False, True, False]]),
      # Sums 0.07 and 0.5; bound 0.1.
      ("seq_sum_k2", "seq_sum_k2", 0.1, None,
       [[True, True, True], [False, False, False]]),
      # Means 0.0233 and 0.25; bound 0.25 (inclusive) keeps both.
      ("seq_mean_k2", "seq_mean_k2", 0.25, None,
       [[True, True, True], [True, True, False]]),
      # Max 0.045 and 0.5; bound 0.04.
      ("seq_max_k2", "seq_max_k2", 0.04, None,
       [[False, False, False], [False, False, False]]),
      # k3 = e^x - 1 - x: [.00517, .01873, .04986 | .71828, 0]; bound 0.02.
      ("token_k3", "token_k3", 0.02, None,
       [[True, True, False], [False, True, False]]),
      # Sums 0.0738 and 0.7183; bound 0.1.
      ("seq_sum_k3", "seq_sum_k3", 0.1, None,
       [[True, True, True], [False, False, False]]),
      # Means 0.0246 and 0.3591; bound 0.4.
      ("seq_mean_k3", "seq_mean_k3", 0.4, None,
       [[True, True, True], [True, True, False]]),
      # Max 0.0499 and 0.7183; bound 0.05.
      ("seq_max_k3", "seq_max_k3", 0.05, None,
       [[True, True, True], [False, False, False]]),
  )
  def test_golden(self, mode, upper, lower, expected):
    old, sampling, mask = self._hand()
    keep = corr.rejection_mask(old, sampling, mask, mode=mode,
                               threshold=upper, threshold_low=lower)
    np.testing.assert_array_equal(keep, np.array([expected]))
    self.assertEqual(keep.dtype, jnp.bool_)

  @parameterized.named_parameters(*[(m, m) for m in corr.REJECTION_MODES])
  def test_matches_numpy_and_jit(self, mode):
    old, sampling, mask = _random(4, scale=0.3)
    upper = 1.3 if mode.endswith("k1") else 0.05
    keep = corr.rejection_mask(old, sampling, mask, mode=mode,
                               threshold=upper)
    ref = _np_rejection(old, sampling, mask, mode, upper, None)
    np.testing.assert_array_equal(keep, ref)
    # Neither trivial (all kept) nor empty on this input.
    self.assertTrue(0 < ref.sum() < mask.sum())
    jitted = jax.jit(lambda th: corr.rejection_mask(
        old, sampling, mask, mode=mode, threshold=th))(upper)
    np.testing.assert_array_equal(jitted, keep)

  @parameterized.named_parameters(*[(m, m) for m in corr.REJECTION_MODES])
  def test_masked_tokens_change_nothing(self, mode):
    old, sampling, mask = _random(5, scale=0.3)
    upper = 1.3 if mode.endswith("k1") else 0.05
    keep = corr.rejection_mask(old, sampling, mask, mode=mode,
                               threshold=upper)
    old2 = np.where(mask, old, 1e3).astype(np.float32)
    keep2 = corr.rejection_mask(old2, sampling, mask, mode=mode,
                                threshold=upper)
    np.testing.assert_array_equal(keep, keep2)
    self.assertFalse(np.any(np.asarray(keep)[~mask]))

  def test_errors(self):
    old, sampling, mask = self._hand()
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      corr.rejection_mask(old, sampling, mask, mode="seq_max_k1",
                          threshold=2.0)
    with self.assertRaisesRegex(ValueError, "threshold_low applies"):
      corr.rejection_mask(old, sampling, mask, mode="seq_mean_k3",
                          threshold=0.1, threshold_low=0.01)
    with self.assertRaisesRegex(ValueError, "threshold must be > 0"):
      corr.rejection_mask(old, sampling, mask, mode="token_k2",
                          threshold=0.0)
    with self.assertRaisesRegex(ValueError, "threshold_low must be > 0"):
      corr.rejection_mask(old, sampling, mask, mode="token_k1",
                          threshold=2.0, threshold_low=0.0)
    with self.assertRaisesRegex(ValueError, "old_logp_BxGxT must have rank"):
      corr.rejection_mask(old[0], sampling, mask, mode="token_k1",
                          threshold=2.0)


class OpsmMaskTest(parameterized.TestCase):

  @staticmethod
  def _hand():
    # Four samples of two tokens each (the second token of sample 3 is pad).
    # mean_t(sampling - logp): 0.5, 0.1, 2.0, 2.0.
    logp = np.full((1, 4, 2), -1.0, np.float32)
    diff = np.array([[[0.4, 0.6], [0.1, 0.1], [2.0, 2.0], [2.0, 99.0]]])
    sampling = (logp + diff).astype(np.float32)
    mask = np.array([[[True, True]] * 3 + [[True, False]]])
    adv = np.array([[-1.0, -1.0, 1.0, 0.0]], np.float32)
    return logp, sampling, adv, mask

  def test_golden_sequence_advantages(self):
    logp, sampling, adv, mask = self._hand()
    keep = corr.opsm_mask(logp, sampling, adv, mask, threshold=0.3)
    # Sample 0: A < 0 and drift 0.5 > 0.3 -> masked; 1: drift 0.1 <= 0.3;
    # 2: A > 0; 3: A = 0 counts as >= 0 (its pad drift 99 is ignored).
    np.testing.assert_array_equal(
        keep, [[[False, False], [True, True], [True, True], [True, False]]])
    # At threshold 0.5 the drift 0.5 is kept (<=).
    keep = corr.opsm_mask(logp, sampling, adv, mask, threshold=0.5)
    np.testing.assert_array_equal(keep, mask)

  def test_token_advantages(self):
    # DeepSeek-V3.2's per-token sign test with the sequence drift.
    logp, sampling, _, mask = self._hand()
    adv = np.array([[[-1.0, 2.0], [-1.0, -1.0], [-1.0, -1.0],
                     [-1.0, -1.0]]], np.float32)
    keep = corr.opsm_mask(logp, sampling, adv, mask, threshold=0.3)
    np.testing.assert_array_equal(
        keep, [[[False, True], [True, True], [False, False],
                [False, False]]])

  def test_masked_tokens_and_no_gradient(self):
    logp, sampling, adv, mask = self._hand()
    logp2 = np.where(mask, logp, np.nan).astype(np.float32)
    keep = corr.opsm_mask(logp, sampling, adv, mask, threshold=0.3)
    keep2 = corr.opsm_mask(logp2, sampling, adv, mask, threshold=0.3)
    np.testing.assert_array_equal(keep, keep2)

    def f(lp):
      m = corr.opsm_mask(lp, sampling, adv, mask, threshold=0.3)
      return jnp.sum(m * lp)

    # The mask is a constant: the gradient is the mask itself.
    np.testing.assert_array_equal(jax.grad(f)(jnp.asarray(logp)), keep)

  def test_jit_equals_eager(self):
    logp, sampling, adv, mask = self._hand()
    f = lambda th: corr.opsm_mask(logp, sampling, adv, mask, threshold=th)
    np.testing.assert_array_equal(jax.jit(f)(0.3), f(0.3))

  def test_errors(self):
    logp, sampling, adv, mask = self._hand()
    with self.assertRaisesRegex(ValueError, "adv must have shape"):
      corr.opsm_mask(logp, sampling, adv[0], mask, threshold=0.3)
    with self.assertRaisesRegex(ValueError, "adv_BxG must have shape"):
      corr.opsm_mask(logp, sampling, adv[:, :3], mask, threshold=0.3)
    with self.assertRaisesRegex(ValueError, "logp_BxGxT must have shape"):
      corr.opsm_mask(logp[:, :3], sampling, adv, mask, threshold=0.3)


if __name__ == "__main__":
  absltest.main()
