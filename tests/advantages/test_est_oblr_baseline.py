"""OBLR-PO baseline (arXiv 2511.23310): score-norm-weighted group mean."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_oblr_baseline import oblr_baseline
from jaxrl_group.advantages._est_oblr_baseline import score_norm_proxy


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  ctx = {k: (np.asarray(v, np.float32) if k != "token_mask_BxGxT" else v)
         for k, v in ctx.items()}
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def token_inputs(rng, b, g, t):
  lengths = rng.integers(1, t + 1, size=(b, g))
  tm = np.arange(t)[None, None, :] < lengths[..., None]
  logits = rng.normal(size=(b, g, t, 5))
  pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  old_logp = np.log(pi[..., 0]).astype(np.float32)
  sum_pi_sq = np.square(pi).sum(-1).astype(np.float32)
  return tm, old_logp, sum_pi_sq


class OblrBaselineTest(parameterized.TestCase):

  def test_hand_values(self):
    # W = [1, 1, 2, 0], r = [1, 0, 0, 1]: b = (1*1 + 0 + 0 + 0) / 4 = 0.25,
    # A = r - b = [0.75, -0.25, -0.25, 0.75] (plain mean would be 0.5).
    # W = [1, 3], r = [1, 0]: b = 0.25, A = [0.75, -0.25].
    r = [[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 5.0, 5.0]]
    w = [[1.0, 1.0, 2.0, 0.0], [1.0, 3.0, 9.0, 9.0]]
    mask = [[True] * 4, [True, True, False, False]]
    adv = apply(oblr_baseline(), r, mask, score_norm_sq_BxG=w)
    np.testing.assert_allclose(adv, [[0.75, -0.25, -0.25, 0.75],
                                     [0.75, -0.25, 0.0, 0.0]], rtol=1e-6)

  def test_token_proxy_hand_values(self):
    # pi = 0.5 and sum pi^2 = 0.5 on every token: w_t = 1 - 1 + 0.5 = 0.5.
    # Lengths [2, 1, 3, 2] -> W = [1, 0.5, 1.5, 1]; r = [1, 0, 1, 0]:
    # b = (1 + 1.5) / 4 = 0.625, A = [0.375, -0.625, 0.375, -0.625].
    tm = np.arange(3)[None, None, :] < np.array([[2, 1, 3, 2]])[..., None]
    old_logp = np.full((1, 4, 3), np.log(0.5), np.float32)
    sum_pi_sq = np.full((1, 4, 3), 0.5, np.float32)
    np.testing.assert_allclose(score_norm_proxy(tm, old_logp, sum_pi_sq),
                               [[1.0, 0.5, 1.5, 1.0]], rtol=1e-6)
    adv = apply(oblr_baseline(), [[1.0, 0.0, 1.0, 0.0]],
                token_mask_BxGxT=tm, old_logp_BxGxT=old_logp,
                sum_pi_sq_BxGxT=sum_pi_sq)
    np.testing.assert_allclose(adv, [[0.375, -0.625, 0.375, -0.625]],
                               rtol=1e-6)
    # Importance weights 2 on the first sample's tokens: W_0 = 4 * 1 = 4,
    # b = (4 + 1.5) / 7 = 0.785714.
    is_w = np.ones((1, 4, 3), np.float32)
    is_w[0, 0] = 2.0
    adv = apply(oblr_baseline(), [[1.0, 0.0, 1.0, 0.0]],
                token_mask_BxGxT=tm, old_logp_BxGxT=old_logp,
                sum_pi_sq_BxGxT=sum_pi_sq, is_weights_BxGxT=is_w)
    np.testing.assert_allclose(adv[0, 1], -5.5 / 7, rtol=1e-6)

  def test_token_inputs_equal_precomputed_weights(self):
    rng = np.random.default_rng(0)
    tm, old_logp, sum_pi_sq = token_inputs(rng, 6, 5, 7)
    r = rng.binomial(1, 0.5, (6, 5)).astype(np.float32)
    mask = rng.random((6, 5)) < 0.8
    w = score_norm_proxy(tm, old_logp, sum_pi_sq)
    self.assertTrue(np.all(np.asarray(w) > 0))
    a1 = apply(oblr_baseline(), r, mask, score_norm_sq_BxG=w)
    a2 = apply(oblr_baseline(), r, mask, token_mask_BxGxT=tm,
               old_logp_BxGxT=old_logp, sum_pi_sq_BxGxT=sum_pi_sq)
    np.testing.assert_allclose(a1, a2, rtol=1e-6, atol=1e-7)
    # numpy loop: b = sum W r / sum W over valid samples.
    w = np.asarray(w, np.float64)
    for b in range(6):
      idx = np.flatnonzero(mask[b])
      if len(idx) > 1:
        base = (w[b, idx] * r[b, idx]).sum() / w[b, idx].sum()
        np.testing.assert_allclose(a1[b, idx], r[b, idx] - base, rtol=1e-5,
                                   atol=1e-6)

  def test_equal_weights_give_the_group_mean(self):
    rng = np.random.default_rng(1)
    r = rng.normal(size=(5, 6)).astype(np.float32)
    mask = rng.random((5, 6)) < 0.8
    adv = apply(oblr_baseline(), r, mask, score_norm_sq_BxG=np.full((5, 6), 3))
    np.testing.assert_allclose(adv, apply(A.dr_grpo(), r, mask), rtol=1e-5,
                               atol=1e-6)

  def test_division_hazards_stay_finite(self):
    # All weights 0 -> plain mean (0.5); a negative weight is floored at 0.
    r = [[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]]
    w = [[0.0, 0.0, 0.0, 0.0], [-5.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 0.0]]
    adv = apply(oblr_baseline(), r, score_norm_sq_BxG=w)
    np.testing.assert_allclose(adv, [[0.5, -0.5, 0.5, -0.5],
                                     [1.0, 0.0, 0.0, 0.0],
                                     [0.0, 0.0, 0.0, 0.0]], atol=1e-7)
    # Unclamped weights summing to 0 or below also fall back to the mean.
    w = [[1.0, -1.0, 0.0, 0.0], [-5.0, 1.0, 1.0, 1.0], [0.0] * 4]
    adv = apply(oblr_baseline(clamp_weights=False), r, score_norm_sq_BxG=w)
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_allclose(adv[:2], [[0.5, -0.5, 0.5, -0.5],
                                         [0.75, -0.25, -0.25, -0.25]],
                               atol=1e-6)

  def test_large_offset_float32(self):
    rng = np.random.default_rng(2)
    r = (1000.0 + 1e-3 * rng.normal(size=(4, 8))).astype(np.float32)
    w = rng.uniform(0.1, 2.0, (4, 8)).astype(np.float32)
    adv = apply(oblr_baseline(), r, score_norm_sq_BxG=w)
    r64, w64 = r.astype(np.float64), w.astype(np.float64)
    ref = r64 - (w64 * r64).sum(1, keepdims=True) / w64.sum(1, keepdims=True)
    np.testing.assert_allclose(adv, ref, atol=2e-6)

  def test_norm_by_std_and_singletons(self):
    # Group [1, 0], W = [1, 3]: A = [0.75, -0.25], unbiased std 0.7071.
    r = [[1.0, 0.0], [0.7, 9.0]]
    w = [[1.0, 3.0], [2.0, 2.0]]
    mask = [[True, True], [True, False]]
    adv = apply(oblr_baseline(norm_by_std=True, eps=0.0), r, mask,
                score_norm_sq_BxG=w)
    np.testing.assert_allclose(adv, [[0.75 / np.sqrt(0.5),
                                      -0.25 / np.sqrt(0.5)], [0, 0]],
                               rtol=1e-6)
    adv = apply(oblr_baseline(singleton="raw"), r, mask, score_norm_sq_BxG=w)
    np.testing.assert_allclose(adv[1], [0.7, 0.0], rtol=1e-6)
    adv = apply(oblr_baseline(singleton="raw", norm_by_std=True), r, mask,
                score_norm_sq_BxG=w)
    np.testing.assert_allclose(adv[1], [0.7 / (1 + 1e-6), 0.0], rtol=1e-6)

  @parameterized.named_parameters(("eager", False), ("jit", True))
  def test_missing_or_bad_ctx_names_the_key(self, jit):
    tx = oblr_baseline()
    update = jax.jit(tx.update) if jit else tx.update
    r = np.zeros((2, 4), np.float32)
    with self.assertRaisesRegex(A.MissingContextError, "score_norm_sq_BxG"):
      update(r, tx.init(r))
    tm = np.ones((2, 4, 3), bool)
    with self.assertRaisesRegex(A.MissingContextError, "score_norm_sq_BxG"):
      update(r, tx.init(r), token_mask_BxGxT=tm)  # token inputs incomplete
    with self.assertRaisesRegex(ValueError, r"oblr_baseline: score_norm_sq_BxG"
                                r" must have shape \[B, G\] = \(2, 4\)"):
      update(r, tx.init(r), score_norm_sq_BxG=np.ones((2, 5), np.float32))
    with self.assertRaisesRegex(TypeError, "token_mask_BxGxT must be a "
                                "boolean"):
      update(r, tx.init(r), token_mask_BxGxT=tm.astype(np.float32),
             old_logp_BxGxT=np.zeros((2, 4, 3), np.float32),
             sum_pi_sq_BxGxT=np.zeros((2, 4, 3), np.float32))


if __name__ == "__main__":
  absltest.main()
