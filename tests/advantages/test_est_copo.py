"""COPO (arXiv 2508.04138): consistency entropy, local/global blend."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_copo import consistency_entropy
from jaxrl_group.advantages._est_copo import copo
from jaxrl_group.advantages._est_copo import copo_parts

R = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
ANS = np.array([[0, 0, 1, 2], [3, 3, 3, 3]], np.int32)


def apply(tx, r, ans, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask,
                              answer_ids_BxG=np.asarray(ans, np.int32))[0])


def np_copo(r, ans, mask, *, gamma=20.0, rho=1.5, base=2.0, forced=False,
            discount=False, eps=1e-6, geps=1e-6):
  """Per-group loop in float64 (the authors' code, with a mask)."""
  b_, g_ = r.shape
  local = np.zeros((b_, g_))
  ent = np.zeros(b_)
  ret = []
  for b in range(b_):
    m = mask[b]
    vals = r[b][m].astype(np.float64)
    n = len(vals)
    if n == 0:
      continue
    if n > 1:
      local[b][m] = (vals - vals.mean()) / (vals.std(ddof=1) + eps)
    _, counts = np.unique(ans[b][m], return_counts=True)
    p = counts / n
    ent[b] = -np.sum(p * np.log(p)) / np.log(base)
    coef = 1.0
    if discount and n > 1:
      coef = 1 - (1 - 1 / n) * ent[b] / (np.log(n) / np.log(base))
    ret.append((b, vals.mean() * coef))
  rows = np.array([b for b, _ in ret])
  vals = np.array([v for _, v in ret])
  glob_row = np.zeros(b_)
  sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
  glob_row[rows] = (vals - vals.mean()) / (sd + geps)
  w = 1 / (1 + np.exp(-gamma * (ent - rho)))
  w = np.broadcast_to(w[:, None], (b_, g_)).copy()
  if forced:
    w[local == 0] = 0.0
  out = w * local + (1 - w) * glob_row[:, None]
  return np.where(mask, out, 0.0)


class CopoTest(parameterized.TestCase):

  def test_consistency_entropy(self):
    ans = np.array([[0, 0, 1, 2], [0, 1, 2, 3], [5, 5, 5, 5], [0, 0, 1, 2]])
    mask = np.ones((4, 4), bool)
    mask[3, 3] = False
    # p = (1/2, 1/4, 1/4): 1.5 bits; uniform over 4: 2 bits; one answer: 0;
    # masked (2/3, 1/3): 0.918296 bits.
    h = consistency_entropy(ans, mask)
    np.testing.assert_allclose(h, [1.5, 2.0, 0.0, 0.918296], rtol=1e-5,
                               atol=1e-7)
    h_nats = consistency_entropy(ans, mask, log_base=math.e)
    np.testing.assert_allclose(h_nats, np.asarray(h) * math.log(2),
                               rtol=1e-5, atol=1e-7)
    self.assertEqual(float(consistency_entropy(ans, ~np.ones((4, 4),
                                                             bool))[0]), 0.0)

  def test_hand_values(self):
    # Group 0: H = 1.5 bits = rho -> w = sigmoid(0) = 0.5. Local (GRPO,
    #   unbiased std sqrt(1/3)): +-0.5 / 0.577351 = +-0.866024.
    # Group 1: H = 0 -> w = sigmoid(-30) = 9.4e-14; local 0.
    # Global: R = (0.5, 1.0), mean 0.75, unbiased std 0.353553:
    #   A_glob = -+0.25 / 0.353554 = -+0.707105.
    # Group 0: 0.5 (+-0.866024) + 0.5 (-0.707105) = 0.079460, -0.786565;
    # group 1: 0.707105.
    adv = apply(copo(), R, ANS)
    np.testing.assert_allclose(
        adv, [[0.079460, 0.079460, -0.786565, -0.786565], [0.707105] * 4],
        rtol=1e-5)

  @parameterized.named_parameters(
      ("default", {}, {}),
      ("forced", dict(force_global_if_zero=True), dict(forced=True)),
      ("discount", dict(entropy_discount=True), dict(discount=True)),
      ("nats", dict(log_base=math.e, rho=1.0), dict(base=math.e, rho=1.0)),
      ("soft", dict(gamma=2.0, rho=0.5), dict(gamma=2.0, rho=0.5)),
  )
  def test_matches_numpy_loop(self, kwargs, ref_kwargs):
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.5, (12, 6)).astype(np.float32)
    ans = rng.integers(0, 3, (12, 6)).astype(np.int32)
    mask = rng.random((12, 6)) < 0.85
    r[0] = 0.0  # all-equal group with diverse answers
    ans[1] = 2  # one answer only
    mask[2] = False  # padded prompt
    mask[3, 1:] = False  # singleton
    got = apply(copo(**kwargs), r, ans, mask)
    np.testing.assert_allclose(got, np_copo(r, ans, mask, **ref_kwargs),
                               rtol=1e-5, atol=1e-6)

  def test_force_global_on_homogeneous_group(self):
    # All wrong but four different answers: H = 2 bits, w = sigmoid(10):
    # the soft blend keeps only 4.5e-5 of the global advantage; the code's
    # "soft-with-forced" mode gives all of it (local advantage is 0).
    r = [[0, 0, 0, 0], [1, 1, 0, 0]]
    ans = [[0, 1, 2, 3], [0, 0, 1, 1]]
    soft = apply(copo(), r, ans)
    forced = apply(copo(force_global_if_zero=True), r, ans)
    np.testing.assert_allclose(soft[0], -0.707105 / (1 + math.exp(10)),
                               rtol=1e-4)
    np.testing.assert_allclose(forced[0], -0.707105, rtol=1e-5)

  def test_single_prompt_global_is_zero(self):
    adv = apply(copo(), R[:1], ANS[:1])
    np.testing.assert_allclose(adv, 0.5 * np.array([[0.866024, 0.866024,
                                                     -0.866024, -0.866024]]),
                               rtol=1e-5)

  def test_without_std(self):
    # The code's norm_adv_by_std_in_grpo = False: r - mean_g, R - mean_q.
    adv = apply(copo(norm_by_std=False), R, ANS)
    np.testing.assert_allclose(
        adv, [[0.5 * 0.5 - 0.5 * 0.25] * 2 + [-0.5 * 0.5 - 0.5 * 0.25] * 2,
              [0.25] * 4], rtol=1e-5)

  def test_parts_recombine(self):
    mask = np.ones(R.shape, bool)
    parts = copo_parts(jnp.asarray(R), jnp.asarray(ANS), jnp.asarray(mask))
    w = np.asarray(parts.weight_local)
    np.testing.assert_allclose(w[0], 0.5)
    np.testing.assert_allclose(w + parts.weight_global, 1.0, rtol=1e-6)
    np.testing.assert_allclose(parts.entropy, [1.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(
        w * parts.local + parts.weight_global * parts.global_,
        apply(copo(), R, ANS), rtol=1e-6)

  def test_traced_gamma_and_rho_without_recompiling(self):
    tx = A.inject_hyperparams(copo)(gamma=20.0, rho=1.5)
    traces = []

    def f(r, state):
      traces.append(1)
      return tx.update(r, state, answer_ids_BxG=ANS)

    jf = jax.jit(f)
    state = tx.init(R)
    a, state = jf(R, state)
    np.testing.assert_allclose(a[0, 0], 0.079460, rtol=1e-5)
    state = state._replace(hyperparams={"gamma": jnp.float32(20.0),
                                        "rho": jnp.float32(-10.0)})
    b, _ = jf(R, state)  # w ~= 1: local only
    np.testing.assert_allclose(b[0], [0.866024, 0.866024, -0.866024,
                                      -0.866024], rtol=1e-5)
    self.assertLen(traces, 1)

  def test_bad_input(self):
    with self.assertRaisesRegex(A.MissingContextError, "answer_ids_BxG"):
      copo().update(R, A.EmptyState())
    with self.assertRaisesRegex(TypeError, "answer_ids_BxG must be an "
                                "integer"):
      copo().update(R, A.EmptyState(),
                    answer_ids_BxG=ANS.astype(np.float32))
    with self.assertRaisesRegex(ValueError, r"copo: answer_ids_BxG must have "
                                r"shape \[B, G\] = \(2, 4\)"):
      copo().update(R, A.EmptyState(), answer_ids_BxG=ANS[:, :3])
    with self.assertRaisesRegex(ValueError, "log_base must be > 0 and != 1"):
      copo(log_base=1.0)
    with self.assertRaisesRegex(ValueError, "global_std must be one of"):
      copo(global_std="bessel")
    with self.assertRaisesRegex(ValueError, "global_eps must be >= 0"):
      copo(global_eps=-1.0)


if __name__ == "__main__":
  absltest.main()
