"""PSHW (Confucius3-Math, arXiv 2506.18330): (R - mu) (alpha mu + 1.256)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_pshw import pshw
from jaxrl_group.advantages._est_pshw import pshw_weight


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


class PshwTest(parameterized.TestCase):

  def test_d_range_of_the_reference(self):
    # D(mu) = -0.256 mu + 1.256: D(1) = 1.0, D(-1) = 1.512, D(0) = 1.256.
    np.testing.assert_allclose(pshw_weight(1.0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(pshw_weight(-1.0), 1.512, rtol=1e-6)
    np.testing.assert_allclose(pshw_weight(0.0), 1.256, rtol=1e-6)
    d = np.asarray(pshw_weight(jnp.linspace(-1.0, 1.0, 101)))
    self.assertTrue(np.all(np.diff(d) < 0))  # harder (lower mu): larger D
    self.assertTrue(np.all((d >= 1.0 - 1e-6) & (d <= 1.512 + 1e-6)))

  def test_d_range_reached_through_the_estimator(self):
    # One correct of n: mu = -1 + 2/n -> D -> 1.512; one wrong: D -> 1.0.
    # n = 1000: mu = -0.998, D = 1.511488; the correct one gets
    # (1 + 0.998) D = 3.0198.
    n = 1000
    hard = -np.ones((1, n))
    hard[0, 0] = 1.0
    adv = apply(pshw(), hard)
    np.testing.assert_allclose(adv[0, 0], 1.998 * 1.511488, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1], -0.002 * 1.511488, rtol=1e-3)
    easy = -hard
    adv = apply(pshw(), easy)
    np.testing.assert_allclose(adv[0, 0], -1.998 * 1.000512, rtol=1e-5)

  def test_hand_values(self):
    # [+1, +1, +1, -1]: mu = 0.5, D = -0.128 + 1.256 = 1.128;
    #   A = 0.5 * 1.128 = 0.564 and -1.5 * 1.128 = -1.692.
    # [+1, -1, -1, -1]: mu = -0.5, D = 0.128 + 1.256 = 1.384;
    #   A = 1.5 * 1.384 = 2.076 and -0.5 * 1.384 = -0.692.
    # [+1, -1]: mu = 0, D = 1.256; A = +-1.256 (no std division: GRPO would
    #   give +-0.7071).
    r = [[1.0, 1.0, 1.0, -1.0], [1.0, -1.0, -1.0, -1.0], [1.0, -1.0, 0, 0]]
    mask = [[True] * 4, [True] * 4, [True, True, False, False]]
    adv = apply(pshw(), r, mask)
    np.testing.assert_allclose(
        adv, [[0.564, 0.564, 0.564, -1.692],
              [2.076, -0.692, -0.692, -0.692],
              [1.256, -1.256, 0.0, 0.0]], rtol=1e-5)

  def test_binary_rewards_with_threshold(self):
    rng = np.random.default_rng(0)
    r01 = rng.binomial(1, 0.4, (8, 6)).astype(np.float32)
    mask = rng.random((8, 6)) < 0.8
    np.testing.assert_allclose(apply(pshw(correct_threshold=0.5), r01, mask),
                               apply(pshw(), 2 * r01 - 1, mask), rtol=1e-6)

  def test_matches_numpy_loop(self):
    rng = np.random.default_rng(1)
    r = np.where(rng.random((16, 8)) < 0.5, 1.0, -1.0)
    mask = rng.random((16, 8)) < 0.8
    adv = apply(pshw(), r, mask)
    ref = np.zeros_like(r)
    for b in range(16):
      vals = r[b][mask[b]]
      if len(vals) > 1:
        mu = vals.mean()
        ref[b][mask[b]] = (vals - mu) * (-0.256 * mu + 1.256)
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-6)

  def test_edges(self):
    r = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 5.0, 5.0], [1, 1, -1]]
    mask = [[True] * 3, [True] * 3, [True, False, False], [False] * 3]
    adv = apply(pshw(), r, mask)
    np.testing.assert_array_equal(adv, np.zeros((4, 3)))
    # "raw" singleton: mu taken as 0, so A = R * 1.256.
    adv = apply(pshw(singleton="raw"), r, mask)
    np.testing.assert_allclose(adv[2], [1.256, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(adv[[0, 1, 3]], np.zeros((3, 3)))

  def test_traced_alpha_beta(self):
    tx = A.inject_hyperparams(pshw)(alpha=-0.256, beta=1.256)
    r = jnp.array([[1.0, -1.0, -1.0, -1.0]])
    state = tx.init(r)
    state = state._replace(hyperparams={"alpha": jnp.float32(0.0),
                                        "beta": jnp.float32(2.0)})
    adv, _ = jax.jit(tx.update)(r, state)
    np.testing.assert_allclose(adv, [[3.0, -1.0, -1.0, -1.0]], rtol=1e-6)

  def test_bad_input_names_the_argument(self):
    with self.assertRaisesRegex(ValueError, "pshw: singleton must be one of"):
      pshw(singleton="nan")
    tx = pshw()
    with self.assertRaisesRegex(ValueError, "pshw: rewards_BxG must have "
                                "rank 2"):
      tx.update(np.zeros(4, np.float32), tx.init(None))
    with self.assertRaisesRegex(ValueError, r"pshw: mask_BxG must have shape"):
      tx.update(np.zeros((2, 4), np.float32), tx.init(None),
                mask_BxG=np.ones((2, 3), bool))


if __name__ == "__main__":
  absltest.main()
