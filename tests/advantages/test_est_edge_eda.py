"""EDGE-GRPO EDA (arXiv 2507.21848): golden values, padding invariance, the
mean-entropy-near-0 hazard."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_edge_eda import edge_eda

R = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], np.float32)
H = np.array([[0.5, 1.0, 1.0, 1.0], [0.2, 0.4, 0.3, 0.3]], np.float32)


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def grpo_trl(r):
  """(r - mean) / (std_unbiased + 1e-4) per row, float64."""
  r = np.asarray(r, np.float64)
  return (r - r.mean(-1, keepdims=True)) / (r.std(-1, ddof=1,
                                                   keepdims=True) + 1e-4)


class EdgeEdaTest(parameterized.TestCase):

  def test_hand_values_batch_mean(self):
    # Pbar = (0.5 + 3 * 1 + 0.2 + 0.4 + 0.3 + 0.3) / 8 = 4.7 / 8 = 0.5875.
    # Row 0: A = (0.75, -0.25 x3) / (0.5 + 1e-4) = 1.49970, -0.49990;
    #   weights 0.5875 / 0.5 = 1.175 and 0.5875 / 1 = 0.5875
    #   -> 1.762147, -0.293692.
    # Row 1: std = 0.57735, A = +-0.5 / 0.57745 = +-0.865875;
    #   weights 2.9375, 1.46875, 1.958333, 1.958333
    #   -> 2.543508, 1.271754, -1.695671, -1.695671.
    adv = apply(edge_eda(), R, entropy_BxG=H)
    np.testing.assert_allclose(
        adv, [[1.762147, -0.293692, -0.293692, -0.293692],
              [2.543508, 1.271754, -1.695671, -1.695671]], rtol=1e-5)

  def test_group_mean_option(self):
    # Pbar per group: 0.875 and 0.3.
    adv = apply(edge_eda(mean_over="group"), R, entropy_BxG=H)
    pbar = np.array([[0.875], [0.3]])
    np.testing.assert_allclose(adv, grpo_trl(R) * (pbar + 1e-6) / (H + 1e-6),
                               rtol=1e-5)

  def test_all_equal_group_gives_zero(self):
    adv = apply(edge_eda(), [[1.0, 1.0, 1.0, 1.0]], entropy_BxG=H[:1])
    np.testing.assert_array_equal(adv, 0.0)

  def test_padding_invariance_with_token_entropies(self):
    # Per-token entropies with garbage at padded positions: the masked mean
    # ignores them, and extra padding (a longer T) changes nothing.
    rng = np.random.default_rng(0)
    b, g, t = 3, 4, 6
    r = rng.binomial(1, 0.5, (b, g)).astype(np.float32)
    r[:, 0], r[:, 1] = 1.0, 0.0
    lengths = rng.integers(1, t + 1, (b, g))
    tm = np.arange(t)[None, None, :] < lengths[..., None]
    h_tok = rng.uniform(0.1, 2.0, (b, g, t)).astype(np.float32)
    padded = np.where(tm, h_tok, 1e3).astype(np.float32)
    per_sample = (h_tok * tm).sum(-1) / tm.sum(-1)
    ref = apply(edge_eda(), r, entropy_BxG=per_sample.astype(np.float32))
    got = apply(edge_eda(), r, entropy_BxGxT=padded, token_mask_BxGxT=tm)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    extra = np.concatenate([padded, np.full((b, g, 5), 7.0, np.float32)], -1)
    tm_extra = np.concatenate([tm, np.zeros((b, g, 5), bool)], -1)
    got2 = apply(edge_eda(), r, entropy_BxGxT=extra,
                 token_mask_BxGxT=tm_extra)
    np.testing.assert_allclose(got2, ref, rtol=1e-5)
    # The authors' unmasked mean (kept as an option) is not invariant.
    unmasked = apply(edge_eda(entropy_mean="unmasked"), r,
                     entropy_BxGxT=padded)
    code_ref = apply(edge_eda(), r, entropy_BxG=padded.mean(-1))
    np.testing.assert_allclose(unmasked, code_ref, rtol=1e-5)
    self.assertGreater(np.abs(unmasked - ref).max(), 1e-2)

  def test_masked_samples_do_not_enter_the_mean(self):
    mask = np.ones((2, 4), bool)
    mask[1, 3] = False
    h2 = H.copy()
    h2[1, 3] = 1e4  # ignored
    adv = apply(edge_eda(), R, mask, entropy_BxG=h2)
    pbar = (4.7 - 0.3) / 7
    a = np.zeros((2, 4))
    a[0] = grpo_trl(R[:1])[0]
    a[1, :3] = grpo_trl(R[1:, :3])[0]
    np.testing.assert_allclose(adv, a * (pbar + 1e-6) / (h2 + 1e-6) * mask,
                               rtol=1e-5, atol=1e-7)
    self.assertEqual(adv[1, 3], 0.0)

  def test_sample_without_tokens_gets_weight_one(self):
    tm = np.ones((2, 4, 3), bool)
    tm[1, 0] = False  # empty response: no entropy
    h_tok = np.repeat(H[..., None], 3, axis=-1)
    adv = apply(edge_eda(), R, entropy_BxGxT=h_tok, token_mask_BxGxT=tm)
    pbar = (4.7 - 0.2) / 7
    w = (pbar + 1e-6) / (H + 1e-6)
    w[1, 0] = 1.0
    np.testing.assert_allclose(adv, grpo_trl(R) * w, rtol=1e-5)

  def test_zero_entropy_is_finite(self):
    # Every entropy 0: the weight is (0 + e) / (0 + e) = 1, plain GRPO.
    adv = apply(edge_eda(), R, entropy_BxG=np.zeros_like(H))
    np.testing.assert_allclose(adv, grpo_trl(R), rtol=1e-5)
    # One sample with entropy 0: a large but finite weight (Pbar + e) / e,
    # which max_weight caps.
    h0 = H.copy()
    h0[0, 0] = 0.0
    adv = apply(edge_eda(), R, entropy_BxG=h0)
    self.assertTrue(np.isfinite(adv).all())
    pbar = 4.2 / 8
    np.testing.assert_allclose(adv[0, 0], 1.4997 * (pbar + 1e-6) / 1e-6,
                               rtol=1e-4)
    capped = apply(edge_eda(max_weight=3.0), R, entropy_BxG=h0)
    np.testing.assert_allclose(capped[0, 0], 1.4997 * 3.0, rtol=1e-4)
    # A negative (invalid) entropy is floored at 0, not divided by.
    hn = H.copy()
    hn[0, 0] = -1e-6
    self.assertTrue(np.isfinite(apply(edge_eda(), R, entropy_BxG=hn)).all())

  def test_singleton_conventions(self):
    r = [[0.7, 0.0, 0.0, 0.0]]
    mask = [[True, False, False, False]]
    h = np.array([[0.5, 1.0, 1.0, 1.0]], np.float32)
    np.testing.assert_array_equal(apply(edge_eda(), r, mask, entropy_BxG=h),
                                  0.0)
    # raw: 0.7 / (1 + 1e-4) with weight (0.5 + e) / (0.5 + e) = 1.
    np.testing.assert_allclose(
        apply(edge_eda(singleton="raw"), r, mask, entropy_BxG=h)[0, 0],
        0.7 / (1 + 1e-4), rtol=1e-6)

  def test_gradient_flows_through_own_entropy_only(self):
    # Pbar is under stop_gradient (the authors' code); P_i is not.
    tx = edge_eda(norm_by_std=False)

    def f(h):
      return tx.update(R, A.EmptyState(), entropy_BxG=h)[0][0, 0]

    g = np.array(jax.grad(f)(jnp.asarray(H)))
    # d/dP_00 of 0.75 (Pbar + e) / (P_00 + e) = -0.75 (Pbar + e) / P_00^2.
    np.testing.assert_allclose(g[0, 0], -0.75 * 0.5875 / 0.25, rtol=1e-4)
    g[0, 0] = 0.0
    np.testing.assert_array_equal(g, 0.0)

  def test_bad_input(self):
    with self.assertRaisesRegex(A.MissingContextError, "entropy_BxG"):
      apply(edge_eda(), R)
    with self.assertRaisesRegex(A.MissingContextError, "token_mask_BxGxT"):
      apply(edge_eda(), R, entropy_BxGxT=np.ones((2, 4, 3), np.float32))
    with self.assertRaisesRegex(ValueError, r"edge_eda: entropy_BxG must "
                                r"have shape \[B, G\] = \(2, 4\)"):
      apply(edge_eda(), R, entropy_BxG=np.ones((2, 3), np.float32))
    with self.assertRaisesRegex(TypeError, "entropy_BxG must be a floating"):
      apply(edge_eda(), R, entropy_BxG=np.ones((2, 4), np.int32))
    with self.assertRaisesRegex(ValueError, "mean_over must be one of"):
      edge_eda(mean_over="device")
    with self.assertRaisesRegex(ValueError, "entropy_mean must be one of"):
      edge_eda(entropy_mean="sum")
    with self.assertRaisesRegex(ValueError, "entropy_eps must be > 0"):
      edge_eda(entropy_eps=0.0)


if __name__ == "__main__":
  absltest.main()
