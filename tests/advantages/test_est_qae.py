"""QAE (arXiv 2509.22611): golden values, both quantile conventions, edges."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _est_qae

qae = _est_qae.qae


def apply(tx, r, mask=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


def np_qae(r, mask, *, k, method, eps=1e-6, singleton="zero"):
  """Per-group loop in float64 with numpy's quantile."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    vals = r[b][mask[b]]
    if len(vals) == 1 and singleton == "raw":
      out[b][mask[b]] = vals / (1 + eps)
    elif len(vals) > 1:
      base = np.quantile(vals, k, method=method)
      out[b][mask[b]] = (vals - base) / (vals.std(ddof=1) + eps)
  return out


# Three failures and five successes (G = 8).
R38 = [[0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]]
# mean 5/8; unbiased var (3 (5/8)^2 + 5 (3/8)^2) / 7 = 120/448.
SD38 = np.sqrt(120 / 448)  # 0.5175492


class QaeTest(parameterized.TestCase):

  def test_worked_example_linear_baseline_is_0_8(self):
    # Code (torch.quantile): position 0.4 * 7 = 2.8 between sorted[2] = 0
    # and sorted[3] = 1 -> b = 0.8. Failures 0 - 0.8, successes 1 - 0.8.
    adv = apply(qae(k=0.4, method="linear", norm_by_std=False), R38)
    np.testing.assert_allclose(
        adv, [[-0.8, 0.2, -0.8, 0.2, 0.2, -0.8, 0.2, 0.2]], rtol=1e-6)
    adv = apply(qae(k=0.4, method="linear", eps=0.0), R38)
    np.testing.assert_allclose(adv[0, :2], [-0.8 / SD38, 0.2 / SD38],
                               rtol=1e-6)  # -1.545750, 0.386437

  def test_worked_example_inverted_cdf_baseline_is_1(self):
    # Paper: ceil(0.4 * 8) = 4th smallest = 1 -> successes 0, failures -1/sd.
    adv = apply(qae(k=0.4, method="inverted_cdf", norm_by_std=False), R38)
    np.testing.assert_allclose(adv, [[-1, 0, -1, 0, 0, -1, 0, 0]], atol=0)
    adv = apply(qae(k=0.4, method="inverted_cdf", eps=0.0), R38)
    np.testing.assert_allclose(adv[0, 0], -1 / SD38, rtol=1e-6)  # -1.932188
    self.assertEqual(float(adv[0, 1]), 0.0)

  def test_default_is_the_authors_code(self):
    np.testing.assert_allclose(apply(qae(), R38),
                               apply(qae(method="linear"), R38))

  def test_methods_agree_when_position_is_integer(self):
    # G = 16, K = 0.4: linear position 0.4 * 15 = 6.0; paper ceil(6.4) = 7th
    # smallest (index 6). 7 failures: both give b = 0; 6 failures: b = 1.
    for fails, base in ((7, 0.0), (6, 1.0)):
      r = np.ones((1, 16), np.float32)
      r[0, :fails] = 0
      for method in ("linear", "inverted_cdf"):
        adv = apply(qae(method=method, norm_by_std=False), r)
        np.testing.assert_allclose(adv, r - base, atol=0, err_msg=method)

  @parameterized.parameters("linear", "inverted_cdf")
  def test_binary_gate(self, method):
    # G = 10, K = 0.4, inverted_cdf: b = 0 iff p <= 1 - K = 0.6.
    # Hard (p = 0.3): only successes get a signal, > 0.
    hard = np.zeros((1, 10), np.float32)
    hard[0, :3] = 1
    adv = apply(qae(method=method), hard)
    if method == "inverted_cdf":
      np.testing.assert_array_equal(adv[0, 3:], 0)
    self.assertTrue((adv[0, :3] > 0).all())
    # Easy (p = 0.8): only failures get a signal, < 0.
    easy = np.ones((1, 10), np.float32)
    easy[0, :2] = 0
    adv = apply(qae(method=method), easy)
    np.testing.assert_array_equal(adv[0, 2:], 0)
    self.assertTrue((adv[0, :2] < 0).all())

  @parameterized.product(
      method=("linear", "inverted_cdf"), k=(0.1, 0.4, 0.5, 0.7, 0.9))
  def test_matches_numpy_quantile_with_masks(self, method, k):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(12, 10)).astype(np.float32)
    r[:3] = np.round(r[:3])  # ties
    mask = rng.random((12, 10)) < 0.8
    mask[0] = True  # n = 10: 0.7 * 10 is 7 only up to rounding
    mask[1] = False
    mask[1, 4] = True  # singleton
    mask[2, :2] = True
    mask[2, 2:] = False  # pair
    adv = apply(qae(k=k, method=method), r, mask)
    np.testing.assert_allclose(adv, np_qae(r, mask, k=k, method=method),
                               rtol=1e-5, atol=1e-6)

  def test_masked_quantile_float_tolerance(self):
    # 0.7 * 10 = 7.000000000000001 in float64: the 7th smallest, as numpy.
    x = jnp.arange(10.0)[None]
    m = jnp.ones((1, 10), bool)
    q = _est_qae.masked_quantile(x, m, 0.7, method="inverted_cdf")
    self.assertEqual(float(q[0, 0]), 6.0)
    with jax.enable_x64(True):
      q = _est_qae.masked_quantile(jnp.arange(10.0, dtype=jnp.float64)[None],
                                   m, 0.7, method="inverted_cdf")
      self.assertEqual(float(q[0, 0]), 6.0)

  def test_edges_are_finite(self):
    r = [[0.7, 0.7, 0.7, 0.7],  # all equal: b = 0.7, 0 / eps = 0
         [0.3, 9.0, 9.0, 9.0],  # singleton
         [5.0, 5.0, 5.0, 5.0],  # fully masked
         [1.0, 0.0, 7.0, 7.0]]  # pair
    mask = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    for method in ("linear", "inverted_cdf"):
      adv = apply(qae(method=method), r, mask)
      self.assertTrue(np.isfinite(adv).all())
      np.testing.assert_array_equal(adv[:3], 0)
    # Pair [1, 0], K = 0.4: linear b = 0.4; sd = 1/sqrt(2).
    adv = apply(qae(eps=0.0), r, mask)
    np.testing.assert_allclose(adv[3, :2], [0.6 * np.sqrt(2),
                                            -0.4 * np.sqrt(2)], rtol=1e-6)
    # verl singleton: baseline 0, std 1.
    adv = apply(qae(singleton="raw"), r, mask)
    np.testing.assert_allclose(adv[1], [0.3 / (1 + 1e-6), 0, 0, 0],
                               rtol=1e-6)

  def test_traced_k_matches_concrete(self):
    r = np.asarray(R38, np.float32)

    @jax.jit
    def f(r, k):
      tx = qae(k=k)
      return tx.update(r, tx.init(r))[0]

    np.testing.assert_allclose(f(r, 0.4), apply(qae(k=0.4), r), rtol=1e-6)
    tx = A.inject_hyperparams(qae)(k=0.4, method="inverted_cdf")
    adv, state = jax.jit(tx.update)(r, tx.init(r))
    np.testing.assert_allclose(
        adv, apply(qae(k=0.4, method="inverted_cdf"), r), rtol=1e-6)
    state = state._replace(hyperparams={"k": jnp.float32(0.9)})
    adv, _ = jax.jit(tx.update)(r, state)
    np.testing.assert_allclose(
        adv, apply(qae(k=0.9, method="inverted_cdf"), r), rtol=1e-6)

  def test_bad_arguments_name_them(self):
    with self.assertRaisesRegex(ValueError, r"qae: k must be in \(0, 1\)"):
      qae(k=1.0)
    with self.assertRaisesRegex(ValueError, "qae: k must be"):
      qae(k=0)
    with self.assertRaisesRegex(ValueError, "qae: method must be one of"):
      qae(method="nearest")
    with self.assertRaisesRegex(ValueError, "qae: singleton must be"):
      qae(singleton="nan")
    with self.assertRaisesRegex(ValueError, "qae: rewards_BxG must have rank"):
      apply(qae(), np.zeros(4))
    with self.assertRaisesRegex(TypeError, "qae: mask_BxG must be a boolean"):
      qae().update(np.zeros((1, 4), np.float32), A.EmptyState(),
                     mask_BxG=np.ones((1, 4), np.float32))

  def test_registered(self):
    info = A.info("qae")
    self.assertEqual((info.min_group_size, info.requires, info.stateful),
                     (2, (), False))


if __name__ == "__main__":
  absltest.main()
