"""CANON (arXiv 2509.23962): half-group baselines, mu schedules, state."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _est_canon

canon = _est_canon.canon
cosine_restart = _est_canon.cosine_restart


def apply(tx, r, mask=None, state=None, **ctx):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  ctx = {k: (np.asarray(v, np.float32) if k.endswith("_BxG") else v)
         for k, v in ctx.items()}
  state = tx.init(r) if state is None else state
  adv, state = jax.jit(tx.update)(r, state, mask_BxG=mask, **ctx)
  return np.asarray(adv), state


def np_canon(r, metric, mask, *, mu, alpha=1.0, beta=0.0, c=1.0,
             side="baseline"):
  """Per-group loop in float64 after a stable sort (groups of n >= 2)."""
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(mask[b])
    if len(idx) < 2:
      continue
    order = idx[np.argsort(metric[b][idx], kind="stable")]
    lo, hi = order[:len(idx) // 2], order[len(idx) // 2:]
    m_lo, m_hi = r[b, lo].mean(), r[b, hi].mean()
    for i in hi:
      inter = (r[b, i] - alpha * m_lo if side == "baseline"
               else alpha * r[b, i] - m_lo) + beta
      out[b, i] = (mu * inter + (1 - mu) * (r[b, i] - m_hi)) / c
    for i in lo:
      inter = (alpha * r[b, i] - m_hi if side == "baseline"
               else r[b, i] - alpha * m_hi) - beta
      out[b, i] = (mu * inter + (1 - mu) * (r[b, i] - m_lo)) / c
  return out


# Entropies sort as 1 (0.1), 2 (0.2) | 3 (0.8), 0 (0.9): low half {1, 2}
# with rewards [0, 1] (m_lo = 0.5), high half {0, 3} with [1, 1] (m_hi = 1).
R = [[1.0, 0.0, 1.0, 1.0]]
H = [[0.9, 0.1, 0.2, 0.8]]
INTER = np.array([[0.5, -1.0, 0.0, 0.5]])  # high: R - m_lo; low: R - m_hi
INTRA = np.array([[0.0, -0.5, 0.5, 0.0]])  # high: R - m_hi; low: R - m_lo


class CanonValuesTest(parameterized.TestCase):

  @parameterized.parameters(1.0, 0.0, 0.3)
  def test_hand_values_mu(self, mu):
    # mu = 0.3: 0.3 INTER + 0.7 INTRA = [0.15, -0.65, 0.35, 0.15].
    adv, _ = apply(canon(mu=mu), R, entropy_BxG=H)
    np.testing.assert_allclose(adv, mu * INTER + (1 - mu) * INTRA,
                               rtol=1e-6, atol=1e-7)

  def test_hand_values_alpha_beta_and_constant(self):
    # Entropy version ("baseline"), alpha 0.9, beta 0.1, mu 1:
    # high 1 - 0.9 * 0.5 + 0.1 = 0.65; low 0.9 R - 1 - 0.1 = -1.1, -0.2.
    adv, _ = apply(canon(alpha=0.9, beta=0.1), R, entropy_BxG=H)
    np.testing.assert_allclose(adv, [[0.65, -1.1, -0.2, 0.65]], rtol=1e-6)
    # Length version ("reward"): high 0.9 R - 0.5 + 0.1 = 0.5;
    # low R - 0.9 * 1 - 0.1 = -1.0, 0.0. Lengths order the group as H.
    adv, _ = apply(canon(metric="length", alpha=0.9, beta=0.1), R,
                   lengths_BxG=[[900, 100, 200, 800]])
    np.testing.assert_allclose(adv, [[0.5, -1.0, 0.0, 0.5]], rtol=1e-6,
                               atol=1e-7)
    # C = max_response_length (seq-mean-token-sum) divides everything.
    adv, _ = apply(canon(norm_constant=8192.0), R, entropy_BxG=H)
    np.testing.assert_allclose(adv, INTER / 8192, rtol=1e-6)

  def test_odd_group_puts_the_extra_sample_high(self):
    # n = 5, mid = 2. Metric ascending: 4, 3 | 2, 1, 0. Low rewards [1, 1]
    # (m_lo = 1), high [0, 0, 1] (m_hi = 1/3). mu = 1: high R - 1, low
    # R - 1/3.
    adv, _ = apply(canon(), [[1, 0, 0, 1, 1]], entropy_BxG=[[5, 4, 3, 2, 1]])
    np.testing.assert_allclose(adv, [[0, -1, -1, 2 / 3, 2 / 3]], rtol=1e-6,
                               atol=1e-7)

  def test_ties_keep_index_order(self):
    # Equal metrics: the stable sort keeps {0, 1} low (m_lo = 1) and
    # {2, 3} high (m_hi = 0): low R - 0 = 1, high R - 1 = -1.
    adv, _ = apply(canon(), [[1, 1, 0, 0]], entropy_BxG=[[0.5] * 4])
    np.testing.assert_allclose(adv, [[1, 1, -1, -1]], atol=0)

  def test_mu_half_is_dr_grpo_for_even_groups(self):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(6, 8)).astype(np.float32)
    h = rng.random((6, 8)).astype(np.float32)
    adv, _ = apply(canon(mu=0.5), r, entropy_BxG=h)
    np.testing.assert_allclose(adv, r - r.mean(-1, keepdims=True),
                               rtol=1e-5, atol=1e-6)

  @parameterized.parameters(
      dict(mu=1.0), dict(mu=0.3, alpha=0.9, beta=0.05),
      dict(mu=0.7, alpha=1.1, beta=-0.1, side="reward", c=10.0))
  def test_matches_numpy_loop_with_masks(self, mu, alpha=1.0, beta=0.0,
                                         side="baseline", c=1.0):
    rng = np.random.default_rng(1)
    r = rng.binomial(1, 0.5, (16, 7)).astype(np.float32)
    r[:4] = rng.normal(size=(4, 7))
    h = rng.random((16, 7)).astype(np.float32)
    h[4:6] = np.round(h[4:6] * 2)  # ties
    mask = rng.random((16, 7)) < 0.8
    mask[0] = False
    mask[0, 2] = True  # singleton
    mask[1] = False
    tx = canon(mu=mu, alpha=alpha, beta=beta, alpha_side=side,
               norm_constant=c)
    adv, _ = apply(tx, r, mask, entropy_BxG=h)
    np.testing.assert_allclose(
        adv, np_canon(r, h, mask, mu=mu, alpha=alpha, beta=beta, c=c,
                      side=side), rtol=1e-5, atol=1e-6)

  def test_edges(self):
    r = [[0.7, 0.7, 0.7, 0.7], [0.3, 9, 9, 9], [5, 5, 5, 5], [1, 0, 7, 7]]
    h = [[0.1, 0.4, 0.3, 0.2], [0.5] * 4, [0.5] * 4, [0.9, 0.1, 0.5, 0.5]]
    mask = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    adv, _ = apply(canon(mu=0.3), r, mask, entropy_BxG=h)
    self.assertTrue(np.isfinite(adv).all())
    # All equal -> 0; singleton -> 0; fully masked -> 0; pair [1 | 0]:
    # low {1} (m_lo = 0), high {0} (m_hi = 1): inter 1, -1; intra 0.
    np.testing.assert_allclose(adv, [[0] * 4, [0] * 4, [0] * 4,
                                     [0.3, -0.3, 0, 0]], atol=1e-7)
    # The release forces both half means of a singleton to 0: the high
    # sample gets mu (R + beta) + (1 - mu) R = R + mu beta.
    adv, _ = apply(canon(mu=0.3, beta=0.1, singleton="raw"), r, mask,
                   entropy_BxG=h)
    np.testing.assert_allclose(adv[1], [0.33, 0, 0, 0], rtol=1e-6)


class CanonScheduleTest(parameterized.TestCase):

  def test_cosine_restart_values(self):
    # Warm-up 0.6 (s + 1) / 30; then L = (150 - 30) // 3 = 40 and
    # 0.3 (1 + cos(pi ((s - 30) mod 40) / 40)).
    steps = np.array([0, 1, 29, 30, 50, 69, 70, 150, 200])
    want = [0.02, 0.04, 0.6, 0.6, 0.3,
            0.3 * (1 + np.cos(np.pi * 39 / 40)), 0.6, 0.6,
            0.3 * (1 + np.cos(np.pi / 4))]  # 200: (170 mod 40) = 10
    got = jax.vmap(cosine_restart)(steps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # The _r variant's curve: high 1, low 0.4.
    got = cosine_restart(50, high=1.0, low=0.4)
    np.testing.assert_allclose(got, 0.7, rtol=1e-6)

  def test_state_steps_and_advantages_over_several_updates(self):
    # mu = 1 - c(step) from step 1: 1 - 0.04, 1 - 0.06, 1 - 0.08.
    tx = canon(schedule="cosine_restart")
    state = tx.init(np.asarray(R, np.float32))
    self.assertEqual(int(state.step), 1)
    update = jax.jit(tx.update)
    for step, mu in ((1, 0.96), (2, 0.94), (3, 0.92)):
      self.assertEqual(int(state.step), step)
      adv, state = update(np.asarray(R, np.float32), state,
                          entropy_BxG=np.asarray(H, np.float32))
      np.testing.assert_allclose(adv, mu * INTER + (1 - mu) * INTRA,
                                 rtol=1e-5, err_msg=f"step {step}")
    self.assertEqual(int(state.step), 4)

  def test_schedule_receives_the_step(self):
    # The release's plain trainer never passes the step, so the schedule
    # stays at step 0; here every step gives its own mu without retracing.
    tx = canon(schedule="cosine_restart")
    traces = []

    def f(r, state, h):
      traces.append(1)
      return tx.update(r, state, entropy_BxG=h)

    jf = jax.jit(f)
    r, h = np.asarray(R, np.float32), np.asarray(H, np.float32)
    state = tx.init(r)
    outs = []
    for _ in range(40):
      adv, state = jf(r, state, h)
      outs.append(float(adv[0, 0]))  # = 0.5 mu
    self.assertLen(traces, 1)
    self.assertEqual(int(state.step), 41)
    # Steps 1..29 warm up (mu falls 0.96 -> 0.4), step 30 restarts at 0.4,
    # step 40 is 10 steps into the first cosine cycle.
    np.testing.assert_allclose(outs[0], 0.5 * 0.96, rtol=1e-5)
    np.testing.assert_allclose(outs[28], 0.5 * 0.4, rtol=1e-5)
    np.testing.assert_allclose(outs[29], 0.5 * 0.4, rtol=1e-5)
    c40 = 0.3 * (1 + np.cos(np.pi * 10 / 40))
    np.testing.assert_allclose(outs[39], 0.5 * (1 - c40), rtol=1e-5)
    self.assertGreater(len(set(np.round(outs, 6))), 30)

  def test_ctx_step_overrides_and_the_state_follows(self):
    tx = canon(schedule="cosine_restart")
    adv, state = apply(tx, R, entropy_BxG=H, step=np.int32(50))
    # c(50) = 0.3 -> mu = 0.7.
    np.testing.assert_allclose(adv, 0.7 * INTER + 0.3 * INTRA, rtol=1e-5)
    self.assertEqual(int(state.step), 51)
    adv, state = apply(tx, R, state=state, entropy_BxG=H)
    c51 = 0.3 * (1 + np.cos(np.pi * 21 / 40))
    np.testing.assert_allclose(adv, (1 - c51) * INTER + c51 * INTRA,
                               rtol=1e-5)

  def test_reversed_cosine_is_the_inter_weight(self):
    # Release _cosine_restart_r: mu = c with high 1, low 0.4. c(50) = 0.7,
    # c(0) = 1/30.
    tx = canon(schedule="cosine_restart", cosine_weight="inter",
               cosine_high=1.0, cosine_low=0.4)
    for step, mu in ((50, 0.7), (0, 1 / 30)):
      adv, _ = apply(tx, R, entropy_BxG=H, step=step)
      np.testing.assert_allclose(adv, mu * INTER + (1 - mu) * INTRA,
                                 rtol=1e-5)

  def test_accuracy_schedule(self):
    # mu = mean valid reward of the whole batch: R has 3/4, the second
    # group [0, 0, 1, 0] with its last entry padded -> (3 + 1) / 7.
    r = np.array([R[0], [0, 0, 1, 0]], np.float32)
    h = np.array([H[0], [0.1, 0.2, 0.3, 0.4]], np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    adv, state = apply(canon(schedule="accuracy"), r, mask, entropy_BxG=h)
    mu = 4 / 7
    np.testing.assert_allclose(adv[:1], mu * INTER + (1 - mu) * INTRA,
                               rtol=1e-5)
    self.assertEqual(int(state.step), 2)
    # Rewards above 1 clip mu to 1 (pure inter) unless accuracy_clip=False.
    adv, _ = apply(canon(schedule="accuracy"), 3 * r[:1], entropy_BxG=h[:1])
    np.testing.assert_allclose(adv, 3 * INTER, rtol=1e-5)
    adv, _ = apply(canon(schedule="accuracy", accuracy_clip=False),
                   3 * r[:1], entropy_BxG=h[:1])
    np.testing.assert_allclose(adv, 3 * (2.25 * INTER - 1.25 * INTRA),
                               rtol=1e-5)


class CanonStateTest(absltest.TestCase):

  def test_eval_shape_init(self):
    tx = canon(schedule="cosine_restart")
    spec = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    abstract = jax.eval_shape(tx.init, spec)
    self.assertIsInstance(abstract, _est_canon.CanonState)
    self.assertEqual((abstract.step.shape, abstract.step.dtype),
                     ((), jnp.int32))
    chex.assert_trees_all_equal_shapes_and_dtypes(
        abstract, tx.init(jnp.zeros((4, 8))))

  def test_orbax_round_trip(self):
    tx = canon(schedule="cosine_restart")
    r, h = np.asarray(R, np.float32), np.asarray(H, np.float32)
    state = tx.init(r)
    for _ in range(3):
      _, state = tx.update(r, state, entropy_BxG=h)
    path = os.path.join(tempfile.mkdtemp(), "canon_state")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, state)
    ckptr.wait_until_finished()
    restored = ckptr.restore(path, jax.eval_shape(tx.init, r))
    self.assertIsInstance(restored, _est_canon.CanonState)
    chex.assert_trees_all_equal(restored, state)
    self.assertEqual(int(restored.step), 4)
    a1, _ = tx.update(r, state, entropy_BxG=h)
    a2, _ = tx.update(r, restored, entropy_BxG=h)
    np.testing.assert_array_equal(a1, a2)

  def test_safe_increment_saturates(self):
    tx = canon()
    top = jnp.iinfo(jnp.int32).max
    _, state = tx.update(np.asarray(R, np.float32),
                         _est_canon.CanonState(jnp.int32(top)),
                         entropy_BxG=np.asarray(H, np.float32))
    self.assertEqual(int(state.step), top)

  def test_bad_arguments_name_them(self):
    with self.assertRaisesRegex(ValueError, "canon: metric must be one of"):
      canon(metric="perplexity")
    with self.assertRaisesRegex(ValueError, "canon: schedule must be one of"):
      canon(schedule="linear")
    with self.assertRaisesRegex(ValueError, r"canon: mu must be in \[0, 1\]"):
      canon(mu=1.5)
    with self.assertRaisesRegex(ValueError, "canon: norm_constant must be >"):
      canon(norm_constant=0.0)
    with self.assertRaisesRegex(ValueError, "canon: cycles must be >= 1"):
      canon(cycles=0)
    with self.assertRaisesRegex(ValueError, "canon: alpha_side must be one"):
      canon(alpha_side="left")
    r = np.zeros((2, 4), np.float32)
    tx = canon()
    with self.assertRaisesRegex(A.MissingContextError,
                                "canon needs the context input entropy_BxG"):
      jax.jit(tx.update)(r, tx.init(r))
    tx = canon(metric="length")
    with self.assertRaisesRegex(A.MissingContextError, "lengths_BxG"):
      tx.update(r, tx.init(r), entropy_BxG=r)
    with self.assertRaisesRegex(ValueError, r"canon: entropy_BxG must have "
                                r"shape \[B, G\] = \(2, 4\), got \(2, 3\)"):
      canon().update(r, canon().init(r), entropy_BxG=np.zeros((2, 3)))

  def test_registered(self):
    info = A.info("canon")
    self.assertEqual((info.min_group_size, info.requires, info.stateful),
                     (2, ("entropy_BxG",), True))


if __name__ == "__main__":
  absltest.main()
