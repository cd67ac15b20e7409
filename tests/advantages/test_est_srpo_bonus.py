"""GREAM SRPO (arXiv 2510.20815): z-score plus the analytic pass@k bonus."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_srpo_bonus import comb_ratio
from jaxrl_group.advantages._est_srpo_bonus import passk_bonus
from jaxrl_group.advantages._est_srpo_bonus import srpo_bonus


def apply(tx, r, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask)[0])


def comb(n, k):
  """scipy ``comb`` semantics: 0 when n < k or n < 0 or k < 0."""
  return math.comb(n, k) if 0 <= k <= n else 0


def np_bonus(hits, k, eps=1e-6):
  """The source's formula, per group, in exact integer combinatorics."""
  n, c = len(hits), int(sum(hits))
  rho = 1 - comb(n - c, k) / comb(n, k)
  s = math.sqrt(rho * (1 - rho))
  miss = 1 - rho - comb(n - c - 1, k - 1) / comb(n - 1, k - 1)
  return np.array([(1 - rho if h else miss) / (s + eps) for h in hits])


def np_srpo(r, mask, k, eps=1e-6):
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    vals = np.asarray(r[b][mask[b]], np.float64)
    if len(vals) > 1:
      z = (vals - vals.mean()) / (vals.std(ddof=1) + eps)
      bonus = np_bonus(vals >= 1.0, k) if len(vals) >= k else 0
      out[b][mask[b]] = z + bonus
  return out


class SrpoBonusTest(parameterized.TestCase):

  def test_hand_values_n10_c2_k4(self):
    # rho = 1 - C(8,4)/C(10,4) = 1 - 70/210 = 2/3; s = sqrt(2/9) = 0.471405.
    # hit: (1/3)/s = 0.707107; miss: (1 - 2/3 - C(7,3)/C(9,3)) / s =
    # (1/3 - 35/84) / s = (-1/12) / s = -0.176777.
    hits = np.zeros((1, 10), bool)
    hits[0, [2, 7]] = True
    b = np.asarray(passk_bonus(jnp.asarray(hits), jnp.ones((1, 10), bool), 4))
    np.testing.assert_allclose(b[0, 2], 0.70710528, rtol=1e-5)
    np.testing.assert_allclose(b[0, 0], -0.17677632, rtol=1e-5)
    self.assertAlmostEqual(float(b.sum()), 0.0, places=5)

  def test_full_estimator_hand_values(self):
    # GREAM-style partial rewards, G = 10, K = 4, two exact hits.
    r = np.array([[1.0, 0.5, 0.707, 0.0, 0.866, 0.95, 1.0, 0.0, 0.5, 0.0]])
    z = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    bonus = np.where(r == 1.0, 0.70710528, -0.17677632)
    np.testing.assert_allclose(apply(srpo_bonus(), r), z + bonus, rtol=1e-5,
                               atol=1e-6)

  @parameterized.parameters(1, 2, 3, 4, 6)
  def test_bonus_matches_exact_combinatorics(self, k):
    n = 10
    hits = np.arange(n)[None, :] < np.arange(n + 1)[:, None]  # row c: c hits
    got = np.asarray(passk_bonus(jnp.asarray(hits), jnp.ones(hits.shape, bool),
                                 k))
    for c in range(n + 1):
      np.testing.assert_allclose(got[c], np_bonus(hits[c], k), rtol=2e-5,
                                 atol=2e-5, err_msg=f"c={c}")

  def test_edge_cases_of_the_reference(self):
    n, k = 10, 4
    hits = np.arange(n)[None, :] < np.arange(n + 1)[:, None]  # row c: c hits
    b = np.asarray(passk_bonus(jnp.asarray(hits), jnp.ones(hits.shape, bool),
                               k))
    np.testing.assert_array_equal(b[0], 0)  # no hit: bonus 0
    np.testing.assert_array_equal(b[n], 0)  # all hits: bonus 0
    for c in range(n - k + 1, n + 1):  # c >= n - K + 1: misses get 0
      np.testing.assert_array_equal(b[c][~hits[c]], 0)
    self.assertTrue(np.all(b[1:n - k + 1][~hits[1:n - k + 1]] < 0))

  def test_k1_is_population_zscore_of_hits(self):
    # pass@1 = c/n: hit (1 - c/n)/s, miss -(c/n)/s, s = sqrt(p (1 - p)).
    hits = np.array([True, False, False, True, False])
    p = 0.4
    b = passk_bonus(jnp.asarray(hits)[None], jnp.ones((1, 5), bool), 1,
                    eps=0.0)
    np.testing.assert_allclose(b[0], (hits - p) / np.sqrt(p * (1 - p)),
                               rtol=1e-6)

  def test_comb_ratio(self):
    a = jnp.array([8.0, 3.0, -1.0, 10.0, 5.0])
    b = jnp.array([10.0, 10.0, 9.0, 10.0, 5.0])
    np.testing.assert_allclose(comb_ratio(a, b, 4),
                               [70 / 210, 0, 0, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(comb_ratio(a, b, 0), [1, 1, 0, 1, 1])

  def test_padded_groups_match_numpy_and_stay_finite(self):
    rng = np.random.default_rng(0)
    r = rng.choice([0.0, 0.5, 0.707, 0.866, 0.95, 1.0], (16, 10),
                   p=[0.3, 0.1, 0.1, 0.1, 0.1, 0.3]).astype(np.float32)
    mask = rng.random((16, 10)) < 0.8
    mask[0] = np.arange(10) < 3  # n = 3 < K: no bonus (0/0 in the source)
    mask[1] = np.arange(10) < 1  # singleton
    mask[2] = False
    r[3] = 1.0  # all hits
    adv = apply(srpo_bonus(), r, mask)
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_allclose(adv, np_srpo(r, mask, 4), rtol=2e-5,
                               atol=2e-5)
    np.testing.assert_array_equal(adv[~mask], 0)

  def test_bonus_coef_and_hit_threshold(self):
    r = np.array([[1.0, 0.9, 0.0, 0.5, 0.0, 0.2]])
    z = apply(srpo_bonus(bonus_coef=0.0), r)
    full = apply(srpo_bonus(k=2), r)
    half = apply(srpo_bonus(k=2, bonus_coef=0.5), r)
    np.testing.assert_allclose(half - z, 0.5 * (full - z), rtol=1e-5,
                               atol=1e-6)
    # With threshold 0.9, two hits instead of one.
    loose = apply(srpo_bonus(k=2, hit_threshold=0.9), r)
    np.testing.assert_allclose(loose - z, np_bonus(r[0] >= 0.9, 2)[None],
                               rtol=1e-5, atol=1e-6)

  def test_traced_k_without_recompiling(self):
    tx = A.inject_hyperparams(srpo_bonus)(k=4)
    r = jnp.asarray([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0]])
    traces = []

    def f(r, state):
      traces.append(1)
      return tx.update(r, state)[0]

    jf = jax.jit(f)
    state = tx.init(r)
    for k in (4, 2):
      state = state._replace(hyperparams={**state.hyperparams,
                                          "k": jnp.int32(k)})
      np.testing.assert_allclose(jf(r, state), apply(srpo_bonus(k=k), r),
                                 rtol=1e-6, atol=1e-6)
    self.assertLen(traces, 1)

  def test_bad_arguments_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, "srpo_bonus: k must be an integer"
                                " >= 1, got 0"):
      srpo_bonus(k=0)
    with self.assertRaisesRegex(ValueError, "k must be an integer"):
      srpo_bonus(k=2.5)
    with self.assertRaisesRegex(ValueError, "bonus_eps must be >= 0"):
      srpo_bonus(bonus_eps=-1.0)
    tx = srpo_bonus()
    with self.assertRaisesRegex(TypeError, "srpo_bonus: rewards_BxG must be "
                                "a floating"):
      tx.update(np.zeros((2, 4), np.int32), tx.init(None))


if __name__ == "__main__":
  absltest.main()
