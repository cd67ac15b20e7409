"""NGRPO (arXiv 2509.18851): statistics with virtual max-reward samples."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _est_ngrpo

ngrpo = _est_ngrpo.ngrpo


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


def np_ngrpo(r, mask, *, r_max=1.0, k=1, ddof=1, eps=1e-6):
  """Per-group loop in float64: append k copies of r_max, then z-score."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    vals = r[b][mask[b]]
    if len(vals) > 1:
      ext = np.concatenate([vals, np.full(k, r_max)])
      out[b][mask[b]] = (vals - ext.mean()) / (ext.std(ddof=ddof) + eps)
  return out


ONE_OF_EIGHT = np.zeros((1, 8), np.float32)
ONE_OF_EIGHT[0, 2] = 1


class NgrpoTest(parameterized.TestCase):

  def test_worked_example_one_success_of_eight(self):
    # With the virtual 1: mean 2/9, unbiased var (2 (7/9)^2 + 7 (2/9)^2) / 8
    # = 126/648, std 0.440959. Success (7/9)/std = 1.7638, failure
    # -(2/9)/std = -0.50395. GRPO: 2.4749 / -0.35355.
    adv = apply(ngrpo(), ONE_OF_EIGHT)
    sd = np.sqrt(126 / 648)
    np.testing.assert_allclose(adv[0, 2], (7 / 9) / (sd + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(adv[0, 0], -(2 / 9) / (sd + 1e-6), rtol=1e-6)
    np.testing.assert_allclose([adv[0, 2], adv[0, 0]], [1.76, -0.50],
                               atol=5e-3)
    grpo = apply(A.grpo(), ONE_OF_EIGHT)
    np.testing.assert_allclose([grpo[0, 2], grpo[0, 0]], [2.47, -0.35],
                               atol=5e-3)

  def test_worked_example_all_wrong_gives_minus_one_third(self):
    # mean 1/9, unbiased var ((8/9)^2 + 8 (1/9)^2) / 8 = 1/9, std 1/3:
    # A = -(1/9) / (1/3) = -1/3 for every response.
    adv = apply(ngrpo(eps=0.0), np.zeros((1, 8)))
    np.testing.assert_allclose(adv, np.full((1, 8), -1 / 3), rtol=1e-6)

  def test_all_correct_gives_zero(self):
    # std' = 0 and r - mu' = 0 exactly (statistics shifted by r_max).
    adv = apply(ngrpo(), np.ones((2, 8)))
    np.testing.assert_array_equal(adv, 0)
    adv = apply(ngrpo(r_max=0.37), np.full((1, 5), 0.37))
    np.testing.assert_array_equal(adv, 0)

  def test_hand_values_two_virtual_samples(self):
    # r = [0, 1], k = 2, r_max = 2: values [0, 1, 2, 2], mean 1.25,
    # unbiased var (1.5625 + 0.0625 + 2 * 0.5625) / 3 = 2.75 / 3.
    adv = apply(ngrpo(r_max=2.0, k=2, eps=0.0), [[0.0, 1.0]])
    sd = np.sqrt(2.75 / 3)
    np.testing.assert_allclose(adv, [[-1.25 / sd, -0.25 / sd]], rtol=1e-6)
    # Population std: var 2.75 / 4.
    adv = apply(ngrpo(r_max=2.0, k=2, eps=0.0, std="population"),
                [[0.0, 1.0]])
    np.testing.assert_allclose(adv[0, 0], -1.25 / np.sqrt(2.75 / 4),
                               rtol=1e-6)

  def test_k_zero_is_grpo(self):
    rng = np.random.default_rng(1)
    r = rng.normal(size=(6, 5)).astype(np.float32)
    mask = rng.random((6, 5)) < 0.8
    np.testing.assert_allclose(apply(ngrpo(k=0), r, mask),
                               apply(A.grpo(), r, mask), rtol=1e-5,
                               atol=1e-6)

  @parameterized.parameters((1.0, 1), (1.0, 3), (2.5, 2))
  def test_matches_numpy_loop_with_masks(self, r_max, k):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.3, (16, 8)).astype(np.float32)
    r[:4] = rng.uniform(0, 1, (4, 8))
    mask = rng.random((16, 8)) < 0.8
    mask[0] = False
    mask[0, 1] = True
    mask[1] = False
    adv = apply(ngrpo(r_max=r_max, k=k), r, mask)
    np.testing.assert_allclose(adv, np_ngrpo(r, mask, r_max=r_max, k=k),
                               rtol=1e-5, atol=1e-6)

  def test_singleton_conventions(self):
    r = [[0.3, 9.0, 9.0], [0.0, 0.0, 0.0]]
    mask = [[1, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(apply(ngrpo(), r, mask), 0)
    adv = apply(ngrpo(singleton="raw"), r, mask)  # release: mean 0, std 1
    np.testing.assert_allclose(adv, [[0.3 / (1 + 1e-6), 0, 0], [0, 0, 0]],
                               rtol=1e-6)
    # "virtual": values [0.3, 1]: mean 0.65, std 0.7 / sqrt(2) ->
    # -0.35 / 0.49497 = -1 / sqrt(2).
    adv = apply(ngrpo(singleton="virtual", eps=0.0), r, mask)
    np.testing.assert_allclose(adv, [[-1 / np.sqrt(2), 0, 0], [0, 0, 0]],
                               rtol=1e-6)

  def test_traced_hyperparameters(self):
    tx = A.inject_hyperparams(ngrpo)(r_max=1.0, k=1.0)
    r = ONE_OF_EIGHT
    adv, state = jax.jit(tx.update)(r, tx.init(r))
    np.testing.assert_allclose(adv, apply(ngrpo(), r), rtol=1e-6)
    state = state._replace(hyperparams={"r_max": jnp.float32(2.0),
                                        "k": jnp.float32(2.0)})
    adv, _ = jax.jit(tx.update)(r, state)
    np.testing.assert_allclose(adv, apply(ngrpo(r_max=2.0, k=2), r),
                               rtol=1e-6)

  def test_bad_arguments_name_them(self):
    with self.assertRaisesRegex(ValueError, "ngrpo: k must be >= 0"):
      ngrpo(k=-1)
    with self.assertRaisesRegex(ValueError, "ngrpo: singleton must be one of"):
      ngrpo(singleton="nan")
    with self.assertRaisesRegex(ValueError, "ngrpo: eps_placement must be"):
      ngrpo(eps_placement="denominator")
    with self.assertRaisesRegex(ValueError, "ngrpo needs a group size G >= 2"):
      apply(ngrpo(), np.zeros((3, 1)))

  def test_registered(self):
    info = A.info("ngrpo")
    self.assertEqual((info.min_group_size, info.requires, info.stateful),
                     (2, (), False))


if __name__ == "__main__":
  absltest.main()
