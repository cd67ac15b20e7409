"""SFT, DYPO (routing, GAL, mixture), DPO/BVPO and HPT coefficients."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _aggregation as agg
from jaxrl_group.losses import _objectives as obj


def _fd_grad(f, x, eps=1e-6):
  """Central finite differences of a scalar f at x (float64 numpy)."""
  x = np.asarray(x, np.float64)
  f = jax.jit(f)
  g = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[i] = eps
    g[i] = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
  return g


def _softplus(x):
  return np.logaddexp(0.0, x)


# ---------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------


class SftLossTest(parameterized.TestCase):

  def test_golden_bxgxt(self):
    logp = np.array([[[-0.5, -1.0, -7.0], [-2.0, -9.0, -9.0]]], np.float32)
    mask = np.array([[[True, True, False], [True, False, False]]])
    loss, m = obj.sft_loss(logp, mask)
    np.testing.assert_allclose(loss, [[[0.5, 1.0, 0.0], [2.0, 0.0, 0.0]]])
    # token_mean: (0.5 + 1 + 2) / 3; seq_mean_token_sum: (1.5 + 2) / 2.
    np.testing.assert_allclose(m["sft_nll"].value, 3.5 / 3, rtol=1e-6)
    np.testing.assert_allclose(
        agg.aggregate(loss, mask, "seq_mean_token_sum").value, 1.75)

  def test_golden_bxt(self):
    logp = np.array([[-0.5, -1.0], [-3.0, -4.0]], np.float32)
    mask = np.array([[True, True], [False, True]])
    loss, m = obj.sft_loss(logp, mask)
    np.testing.assert_allclose(loss, [[0.5, 1.0], [0.0, 4.0]])
    np.testing.assert_allclose(m["sft_nll"].value, 5.5 / 3, rtol=1e-6)

  def test_gradient_and_masked_tokens(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      logp = -rng.random((2, 3, 4))
      mask = rng.random((2, 3, 4)) < 0.7

      def f(lp):
        loss, _ = obj.sft_loss(lp, mask)
        return agg.aggregate(loss, mask, "token_mean").value

      g = jax.grad(f)(jnp.asarray(logp))
      np.testing.assert_allclose(g, _fd_grad(f, logp), rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(g, -mask.astype(np.float64) / mask.sum(),
                                 rtol=1e-12)
      # NaN at masked tokens reaches neither the value nor the gradient.
      bad = np.where(mask, logp, np.nan)
      np.testing.assert_allclose(f(bad), f(logp))
      np.testing.assert_array_equal(jax.grad(f)(jnp.asarray(bad)), g)

  def test_jit_equals_eager(self):
    logp = -np.random.default_rng(1).random((2, 3, 4)).astype(np.float32)
    mask = logp < -0.3
    eager = obj.sft_loss(logp, mask)
    jitted = jax.jit(obj.sft_loss)(logp, mask)
    np.testing.assert_array_equal(jitted[0], eager[0])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "logp must have shape"):
      obj.sft_loss(np.zeros(3, np.float32), np.ones(3, bool))
    with self.assertRaisesRegex(ValueError, "mask_BxT must have shape"):
      obj.sft_loss(np.zeros((2, 3), np.float32), np.ones((2, 4), bool))
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      obj.sft_loss(np.zeros((1, 2, 3), np.float32), np.ones((1, 2, 3)))
    with self.assertRaisesRegex(TypeError, "logp_BxT must be a floating"):
      obj.sft_loss(np.zeros((2, 3), np.int32), np.ones((2, 3), bool))


# ---------------------------------------------------------------------------
# DYPO
# ---------------------------------------------------------------------------


def _np_gal(seq_logp, seq_ref, rewards, mask, beta):
  """Loops over pairs: (total_B, pairs_B)."""
  b, g = rewards.shape
  total, pairs = np.zeros(b), np.zeros(b)
  for i in range(b):
    for s, f in itertools.product(range(g), range(g)):
      if mask[i, s] and mask[i, f] and rewards[i, s] > rewards[i, f]:
        d = ((seq_logp[i, s] - seq_ref[i, s])
             - (seq_logp[i, f] - seq_ref[i, f]))
        total[i] += _softplus(-beta * d)
        pairs[i] += 1
  return total, pairs


def _gal_problem(seed=0, b=4, g=5):
  rng = np.random.default_rng(seed)
  seq_logp = -10 * rng.random((b, g))
  seq_ref = -10 * rng.random((b, g))
  rewards = (rng.random((b, g)) < 0.5).astype(np.float64)
  rewards[0] = [2.0, 1.0, 0.5, 1.0, 0.0][:g]  # non-binary, with a tie
  mask = rng.random((b, g)) < 0.8
  return seq_logp, seq_ref, rewards, mask


class DypoRouteTest(parameterized.TestCase):

  def test_golden(self):
    rewards = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [1, 0, 0],
                        [0, 1, 1], [1, 1, 1]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1],
                     [0, 1, 1], [0, 0, 0]], bool)
    cat = obj.dypo_route(rewards, mask)
    # Row 3: valid samples (1, 0) -> mixed. Row 4: the masked 0 is ignored
    # -> easy. Row 5: nothing valid -> empty.
    np.testing.assert_array_equal(
        cat, [obj.DYPO_EASY, obj.DYPO_HARD, obj.DYPO_MIXED, obj.DYPO_MIXED,
              obj.DYPO_EASY, obj.DYPO_EMPTY])
    self.assertEqual(cat.dtype, jnp.int32)

  def test_threshold(self):
    rewards = np.array([[-1.0, 1.0], [-1.0, -1.0]], np.float32)
    mask = np.ones((2, 2), bool)
    np.testing.assert_array_equal(
        obj.dypo_route(rewards, mask, threshold=0.0),
        [obj.DYPO_MIXED, obj.DYPO_HARD])
    np.testing.assert_array_equal(
        jax.jit(lambda th: obj.dypo_route(rewards, mask, threshold=th))(0.0),
        [obj.DYPO_MIXED, obj.DYPO_HARD])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "mask_BxG must have shape"):
      obj.dypo_route(np.zeros((2, 3)), np.ones((2, 4), bool))
    with self.assertRaisesRegex(TypeError, "mask_BxG must be a boolean"):
      obj.dypo_route(np.zeros((2, 3)), np.ones((2, 3)))


class GroupAlignmentLossTest(parameterized.TestCase):

  def test_golden_single_pair(self):
    # z = logp - ref = [0.5, -0.5]; R = [1, 0]: one pair, d = 1,
    # loss = -log sigmoid(1) = log(1 + e^-1) = 0.3132617.
    d = obj.group_alignment_loss(np.array([[-1.0, -2.0]], np.float32),
                                 np.array([[-1.5, -1.5]], np.float32),
                                 np.array([[1.0, 0.0]], np.float32),
                                 np.ones((1, 2), bool))
    np.testing.assert_allclose(d.total, 0.3132617, rtol=1e-6)
    np.testing.assert_allclose(d.weight, 1.0)
    # beta = 2: log(1 + e^-2) = 0.1269280.
    d = obj.group_alignment_loss(np.array([[-1.0, -2.0]], np.float32),
                                 np.array([[-1.5, -1.5]], np.float32),
                                 np.array([[1.0, 0.0]], np.float32),
                                 np.ones((1, 2), bool), beta=2.0)
    np.testing.assert_allclose(d.value, 0.1269280, rtol=1e-6)

  def test_pairs_follow_reward_order(self):
    # R = [2, 1, 1, 0]: pairs (0,1), (0,2), (0,3), (1,3), (2,3) = 5; the tie
    # (1, 2) is no pair. With z = 0 every pair costs log 2.
    zeros = np.zeros((1, 4), np.float32)
    d = obj.group_alignment_loss(zeros, zeros,
                                 np.array([[2.0, 1.0, 1.0, 0.0]], np.float32),
                                 np.ones((1, 4), bool))
    np.testing.assert_allclose(d.weight, 5.0)
    np.testing.assert_allclose(d.total, 5 * np.log(2.0), rtol=1e-6)

  def test_matches_loops(self):
    seq_logp, seq_ref, rewards, mask = _gal_problem()
    total, pairs = obj.group_alignment_loss_per_prompt(
        seq_logp.astype(np.float32), seq_ref.astype(np.float32),
        rewards.astype(np.float32), mask, beta=0.7)
    ref_total, ref_pairs = _np_gal(seq_logp, seq_ref, rewards, mask, 0.7)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    np.testing.assert_array_equal(pairs, ref_pairs)
    self.assertGreater(ref_pairs.sum(), 0)
    d = obj.group_alignment_loss(seq_logp.astype(np.float32),
                                 seq_ref.astype(np.float32),
                                 rewards.astype(np.float32), mask, beta=0.7)
    np.testing.assert_allclose(d.value, ref_total.sum() / ref_pairs.sum(),
                               rtol=1e-5)

  def test_homogeneous_groups_have_no_pairs(self):
    d = obj.group_alignment_loss(np.zeros((2, 3), np.float32),
                                 np.zeros((2, 3), np.float32),
                                 np.array([[1.0] * 3, [0.0] * 3], np.float32),
                                 np.ones((2, 3), bool))
    self.assertEqual(float(d.weight), 0.0)
    self.assertEqual(float(d.value), 0.0)

  def test_gradient_matches_finite_differences(self):
    with jax.enable_x64(True):
      seq_logp, seq_ref, rewards, mask = _gal_problem(1)

      def f(x):
        return obj.group_alignment_loss(x, seq_ref, rewards, mask,
                                        beta=0.5).value

      g = jax.grad(f)(jnp.asarray(seq_logp))
      np.testing.assert_allclose(g, _fd_grad(f, seq_logp), rtol=1e-6,
                                 atol=1e-9)
      # The reference log-probs get no gradient.
      g_ref = jax.grad(lambda r: obj.group_alignment_loss(
          jnp.asarray(seq_logp), r, rewards, mask).value)(jnp.asarray(seq_ref))
      np.testing.assert_array_equal(g_ref, np.zeros_like(seq_ref))

  def test_masked_samples_contribute_nothing(self):
    with jax.enable_x64(True):
      seq_logp, seq_ref, rewards, mask = _gal_problem(2)
      bad_logp = np.where(mask, seq_logp, np.nan)
      bad_ref = np.where(mask, seq_ref, np.inf)
      bad_r = np.where(mask, rewards, 100.0)

      def f(x, ref, r):
        return obj.group_alignment_loss(x, ref, r, mask).value

      np.testing.assert_allclose(f(bad_logp, bad_ref, bad_r),
                                 f(seq_logp, seq_ref, rewards))
      g = jax.grad(f)(jnp.asarray(bad_logp), bad_ref, bad_r)
      np.testing.assert_allclose(g, jax.grad(f)(jnp.asarray(seq_logp),
                                                seq_ref, rewards))
      np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)

  def test_micro_batches_combine_exactly(self):
    with jax.enable_x64(True):
      seq_logp, seq_ref, rewards, mask = _gal_problem(3, b=6)

      def part(x, sl):
        return obj.group_alignment_loss(x, seq_ref[sl], rewards[sl],
                                        mask[sl])

      full = part(jnp.asarray(seq_logp), slice(None))
      halves = [slice(0, 3), slice(3, 6)]
      parts = [part(jnp.asarray(seq_logp[sl]), sl) for sl in halves]
      combined = agg.combine(*parts)
      np.testing.assert_allclose(combined.total, full.total, rtol=1e-12)
      np.testing.assert_allclose(combined.weight, full.weight)
      np.testing.assert_allclose(combined.value, full.value, rtol=1e-12)
      # Gradient accumulation: sum of the halves' total-gradients / weight.
      g_full = jax.grad(lambda x: part(x, slice(None)).value)(
          jnp.asarray(seq_logp))
      g_parts = [jax.grad(lambda x, sl=sl: part(x, sl).total)(
          jnp.asarray(seq_logp[sl])) for sl in halves]
      np.testing.assert_allclose(
          np.concatenate(g_parts) / float(combined.weight), g_full,
          rtol=1e-12)

  def test_jit_equals_eager(self):
    seq_logp, seq_ref, rewards, mask = (
        a.astype(np.float32) if a.dtype != bool else a
        for a in _gal_problem(4))
    f = lambda beta: obj.group_alignment_loss(seq_logp, seq_ref, rewards,
                                              mask, beta=beta)
    np.testing.assert_allclose(jax.jit(f)(0.3).value, f(0.3).value,
                               rtol=1e-6)

  def test_errors(self):
    z = np.zeros((2, 3), np.float32)
    m = np.ones((2, 3), bool)
    with self.assertRaisesRegex(ValueError, "seq_ref_logp_BxG must have"):
      obj.group_alignment_loss(z, z[:, :2], z, m)
    with self.assertRaisesRegex(TypeError, "seq_logp_BxG must be a floating"):
      obj.group_alignment_loss(z.astype(np.int32), z, z, m)
    with self.assertRaisesRegex(ValueError, "rewards_BxG must have rank 2"):
      obj.group_alignment_loss(z, z, z[0], m)


class DypoLossTest(parameterized.TestCase):

  # Five prompts of two rollouts: easy [1, 1]; hard [0, 0]; mixed [1, 0]
  # with z = logp - ref = [0.5, -0.5] (L_GAL = log(1 + e^-1) = 0.3132617);
  # empty (no valid rollout); mixed [0, 1] with z = [0, 0] (L_GAL = log 2).
  R = np.array([[1, 1], [0, 0], [1, 0], [1, 0], [0, 1]], np.float32)
  M = np.array([[1, 1], [1, 1], [1, 1], [0, 0], [1, 1]], bool)
  LOGP = np.array([[-1, -1], [-2, -2], [-1, -2], [-1, -1], [-3, -4]],
                  np.float32)
  REF = np.array([[-1, -1], [-2, -2], [-1.5, -1.5], [-1, -1], [-3, -4]],
                 np.float32)
  # Unused entries hold large values: they must not enter.
  GRPO = np.array([1e6, 1e6, 0.4, 1e6, -0.2], np.float32)
  SFT = np.array([1e6, 2.0, 1e6, 1e6, 1e6], np.float32)
  GAL2, GAL4 = 0.3132617, np.log(2.0)

  def _loss(self, grpo=None, sft=None, logp=None, sl=slice(None), **kw):
    grpo = self.GRPO if grpo is None else grpo
    sft = self.SFT if sft is None else sft
    logp = self.LOGP if logp is None else logp
    return obj.dypo_loss(grpo[sl], sft[sl], logp[sl], self.REF[sl],
                         self.R[sl], self.M[sl], **kw)

  @parameterized.named_parameters(
      # gamma * 2 + (a * .4 + (1-a) * GAL2) + (a * -.2 + (1-a) * GAL4).
      ("all", "all", 0.5, 1.0, 4.0),
      ("kept", "kept", 0.5, 1.0, 3.0),
      ("alpha_gamma", "all", 0.25, 0.5, 4.0),
  )
  def test_golden(self, normalize, alpha, gamma, weight):
    d = self._loss(alpha=alpha, gamma=gamma, normalize=normalize)
    total = (gamma * 2.0 + alpha * 0.4 + (1 - alpha) * self.GAL2
             + alpha * -0.2 + (1 - alpha) * self.GAL4)
    np.testing.assert_allclose(d.total, total, rtol=1e-6)
    np.testing.assert_allclose(d.weight, weight)
    # alpha .25, gamma .5: 1 + .1 + .2349463 - .05 + .5198604 = 1.8048067.
    if alpha == 0.25:
      np.testing.assert_allclose(d.total, 1.8048067, rtol=1e-6)

  def test_gradients(self):
    cat = np.asarray(obj.dypo_route(self.R, self.M))
    mixed = (cat == obj.DYPO_MIXED).astype(np.float32)
    hard = (cat == obj.DYPO_HARD).astype(np.float32)
    g_grpo, g_sft = jax.grad(
        lambda a, b: self._loss(a, b, alpha=0.3).total, argnums=(0, 1))(
            self.GRPO, self.SFT)
    np.testing.assert_allclose(g_grpo, 0.3 * mixed, rtol=1e-6)
    np.testing.assert_allclose(g_sft, hard)
    with jax.enable_x64(True):
      logp = self.LOGP.astype(np.float64) + np.array(
          [[0.1, -0.3]] * 5)

      def f(x):
        return self._loss(logp=x, alpha=0.3, beta=0.7).value

      g = jax.grad(f)(jnp.asarray(logp))
      np.testing.assert_allclose(g, _fd_grad(f, logp), rtol=1e-6, atol=1e-9)
      # Only mixed prompts' rollouts get a GAL gradient.
      np.testing.assert_array_equal(np.asarray(g)[mixed == 0], 0.0)
      self.assertTrue(np.all(np.asarray(g)[mixed == 1] != 0))

  def test_micro_batches_combine_exactly(self):
    full = self._loss()
    parts = [self._loss(sl=sl) for sl in (slice(0, 2), slice(2, 5))]
    combined = agg.combine(*parts)
    np.testing.assert_allclose(combined.total, full.total, rtol=1e-6)
    np.testing.assert_allclose(combined.weight, full.weight)

  def test_jit_equals_eager(self):
    f = lambda a, g, b: self._loss(alpha=a, gamma=g, beta=b).value
    np.testing.assert_allclose(jax.jit(f)(0.3, 2.0, 0.5), f(0.3, 2.0, 0.5),
                               rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "normalize must be one of"):
      self._loss(normalize="x")
    with self.assertRaisesRegex(ValueError, "sft_loss_B must have shape"):
      self._loss(sft=self.SFT[:3])
    with self.assertRaisesRegex(TypeError, "grpo_loss_B must be a floating"):
      self._loss(grpo=self.GRPO.astype(np.int32))


# ---------------------------------------------------------------------------
# DPO and BVPO
# ---------------------------------------------------------------------------


class DpoBvpoTest(parameterized.TestCase):

  def test_dpo_golden(self):
    # margin = (-1 - -2) - (-3 - -2) = 2; beta 0.1: log(1 + e^-0.2).
    loss = obj.dpo_loss(np.array([-1.0]), np.array([-3.0]),
                        np.array([-2.0]), np.array([-2.0]))
    np.testing.assert_allclose(loss, [0.5981389], rtol=1e-6)
    loss = obj.dpo_loss(np.array([-1.0]), np.array([-3.0]),
                        np.array([-2.0]), np.array([-2.0]), beta=1.0)
    np.testing.assert_allclose(loss, [np.log1p(np.exp(-2.0))], rtol=1e-6)

  def test_bvpo_golden(self):
    # 0.3 * 2 + 0.7 * 1 = 1.3.
    np.testing.assert_allclose(
        obj.bvpo_loss(np.array([2.0, 0.0]), np.array([1.0, 4.0]), alpha=0.3),
        [1.3, 2.8], rtol=1e-6)

  def test_gradients_match_finite_differences(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      x = -5 * rng.random((4, 3))  # rows: pc, pr, rc, rr for 3 pairs
      y = -5 * rng.random((4, 3))  # the empty-trace pairs

      def dpo(v):
        return jnp.sum(obj.dpo_loss(v[0], v[1], v[2], v[3], beta=0.7))

      g = jax.grad(dpo)(jnp.asarray(x))
      np.testing.assert_allclose(g[:2], _fd_grad(dpo, x)[:2], rtol=1e-6,
                                 atol=1e-9)
      # Reference log-probs are constants.
      np.testing.assert_array_equal(g[2:], np.zeros((2, 3)))

      def bvpo(v):
        lt = obj.dpo_loss(v[0], v[1], v[2], v[3], beta=0.7)
        le = obj.dpo_loss(v[4], v[5], v[6], v[7], beta=0.7)
        return jnp.mean(obj.bvpo_loss(lt, le, alpha=0.3))

      xy = np.concatenate([x, y])
      g = np.asarray(jax.grad(bvpo)(jnp.asarray(xy)))
      fd = _fd_grad(bvpo, xy)
      np.testing.assert_allclose(g[[0, 1, 4, 5]], fd[[0, 1, 4, 5]],
                                 rtol=1e-6, atol=1e-9)
      # The mixed gradient is alpha g_t + (1 - alpha) g_e (mean over the 3
      # pairs, while dpo() sums them).
      g_dpo_t = jax.grad(dpo)(jnp.asarray(x))
      g_dpo_e = jax.grad(dpo)(jnp.asarray(y))
      np.testing.assert_allclose(g[:2], 0.3 / 3 * g_dpo_t[:2], rtol=1e-12)
      np.testing.assert_allclose(g[4:6], 0.7 / 3 * g_dpo_e[:2], rtol=1e-12)

  def test_jit_equals_eager(self):
    f = lambda a, b: obj.bvpo_loss(
        obj.dpo_loss(np.array([-1.0]), np.array([-3.0]), np.array([-2.0]),
                     np.array([-2.5]), beta=b),
        np.array([0.7]), alpha=a)
    np.testing.assert_allclose(jax.jit(f)(0.4, 0.2), f(0.4, 0.2), rtol=1e-6)

  def test_errors(self):
    a = np.zeros(3, np.float32)
    with self.assertRaisesRegex(ValueError, "ref_rejected_logp must have the"):
      obj.dpo_loss(a, a, a, a[:2])
    with self.assertRaisesRegex(TypeError, "policy_chosen_logp must be a"):
      obj.dpo_loss(a.astype(np.int32), a, a, a)
    with self.assertRaisesRegex(ValueError, "dpo_loss_empty must have the"):
      obj.bvpo_loss(a, a[:2], alpha=0.5)


def _np_alpha(gt, ge, gs, n):
  """The generic form with numpy moments (population covariances)."""
  bt, be = gt.mean(0) - gs, ge.mean(0) - gs
  cov = np.cov(np.concatenate([gt, ge], 1).T, bias=True)
  d = gt.shape[1]
  tr_t, tr_e = np.trace(cov[:d, :d]) / n, np.trace(cov[d:, d:]) / n
  tr_c = np.trace(cov[:d, d:]) / n
  return ((be @ be - bt @ be + tr_e - tr_c)
          / ((bt - be) @ (bt - be) + tr_t + tr_e - 2 * tr_c))


class BvpoOptimalAlphaTest(parameterized.TestCase):

  @staticmethod
  def _grads(seed=0, n=64, d=5):
    rng = np.random.default_rng(seed)
    gs = rng.normal(size=d)
    gt = gs + 0.1 + 1.5 * rng.normal(size=(n, d))  # low bias, high variance
    ge = gs + 0.8 + 0.3 * rng.normal(size=(n, d))  # high bias, low variance
    return gt, ge, gs

  @parameterized.parameters(1, 8)
  def test_matches_numpy_generic_form(self, batch_size):
    with jax.enable_x64(True):
      gt, ge, gs = self._grads()
      a = obj.bvpo_optimal_alpha(gt, ge, gs, batch_size=batch_size,
                                 clip=False)
      np.testing.assert_allclose(a, _np_alpha(gt, ge, gs, batch_size),
                                 rtol=1e-10)
      self.assertTrue(0 < float(a) < 1)

  def test_batch_size_one_is_the_expectation_form(self):
    with jax.enable_x64(True):
      gt, ge, gs = self._grads(1)
      a = obj.bvpo_optimal_alpha(gt, ge, gs)
      num = np.mean(np.sum((ge - gt) * (ge - gs), 1))
      den = np.mean(np.sum((gt - ge) ** 2, 1))
      np.testing.assert_allclose(a, num / den, rtol=1e-10)
      # And it minimises the empirical per-sample MSE.
      mse = lambda al: np.mean(np.sum((al * gt + (1 - al) * ge - gs) ** 2, 1))
      for da in (-1e-3, 1e-3):
        self.assertLess(mse(float(a)), mse(float(a) + da))

  def test_clip_and_degenerate(self):
    with jax.enable_x64(True):
      rng = np.random.default_rng(2)
      gs = np.zeros(3)
      # No noise; biases b_t = 0.2, b_e = 1 in each of 3 coordinates:
      # alpha* = (3 - 0.6) / (3 * 0.64) = 1.25, beyond 1 (extrapolation).
      gt = np.broadcast_to(gs + 0.2, (8, 3))
      ge = gs + 1.0 + 0.1 * rng.normal(size=(8, 3))
      ge = ge - ge.mean(0) + 1.0  # bias exactly 1, some variance
      a = obj.bvpo_optimal_alpha(gt, ge, gs, clip=False)
      tr_e = np.mean(np.sum((ge - 1.0) ** 2, 1))
      np.testing.assert_allclose(a, (2.4 + tr_e) / (1.92 + tr_e),
                                 rtol=1e-12)
      self.assertGreater(float(a), 1.0)
      self.assertEqual(float(obj.bvpo_optimal_alpha(gt, ge, gs)), 1.0)
      # Identical estimators: any alpha is optimal; 0.5 by convention.
      self.assertEqual(float(obj.bvpo_optimal_alpha(gt, gt, gs)), 0.5)

  def test_jit_equals_eager(self):
    gt, ge, gs = (x.astype(np.float32) for x in self._grads(3))
    f = lambda n: obj.bvpo_optimal_alpha(gt, ge, gs, batch_size=n)
    np.testing.assert_allclose(jax.jit(f)(4.0), f(4.0), rtol=1e-5)

  def test_errors(self):
    gt, ge, gs = self._grads()
    with self.assertRaisesRegex(ValueError, "grads_empty_NxD must have shape"):
      obj.bvpo_optimal_alpha(gt, ge[:, :3], gs)
    with self.assertRaisesRegex(ValueError, "true_grad_D must have shape"):
      obj.bvpo_optimal_alpha(gt, ge, gs[:3])
    with self.assertRaisesRegex(ValueError, "batch_size must be > 0"):
      obj.bvpo_optimal_alpha(gt, ge, gs, batch_size=0)


# ---------------------------------------------------------------------------
# HPT
# ---------------------------------------------------------------------------


class HptSwitchTest(parameterized.TestCase):

  # G = 4; correct counts k = 0, 1, 2, 4, and a prompt with no valid sample.
  R = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1],
                [1, 1, 0, 0]], np.float32)
  M = np.array([[1] * 4] * 4 + [[0] * 4], bool)

  @parameterized.named_parameters(
      # gate 0: SFT for k = 0, RL otherwise.
      ("gate0", 0, None, [0, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0] * 5),
      ("gate1", 1, None, [0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5),
      # Middle band (0, 2]: off-policy RL on the demonstration.
      ("band", 0, 2, [0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 1, 1, 0, 0]),
      # gate_off below gate: the band is empty.
      ("empty_band", 1, 0, [0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5),
  )
  def test_switch_golden(self, gate, gate_off, rl, sft, off):
    c = obj.hpt_switch(self.R, self.M, gate=gate, gate_off=gate_off)
    np.testing.assert_array_equal(c.rl, rl)
    np.testing.assert_array_equal(c.sft, sft)
    np.testing.assert_array_equal(c.off_rl, off)

  def test_masked_samples_are_not_counted(self):
    mask = self.M.copy()
    mask[1, 0] = False  # the only correct sample of prompt 1
    c = obj.hpt_switch(self.R, mask)
    np.testing.assert_array_equal(c.sft, [1, 1, 0, 0, 0])

  def test_sft_coef(self):
    c = obj.hpt_switch(self.R, self.M, sft_coef=0.3)
    np.testing.assert_allclose(c.sft, [0.3, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(c.rl, [0, 1, 1, 1, 0])

  def test_soft(self):
    c = obj.hpt_switch(self.R, self.M, strategy="soft")
    np.testing.assert_array_equal(c.rl, [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(c.sft, [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(c.off_rl, [0] * 5)
    table = np.array([[0.0, 1.0, 0.0], [0.2, 0.8, 0.1], [0.5, 0.5, 0.2],
                      [0.8, 0.2, 0.3], [1.0, 0.0, 0.4]], np.float32)
    c = obj.hpt_switch(self.R, self.M, strategy="soft", table=table,
                       sft_coef=0.5)
    # Rows k = 0, 1, 2, 4; the empty prompt gets zeros.
    np.testing.assert_allclose(c.rl, [0, 0.2, 0.5, 1.0, 0])
    np.testing.assert_allclose(c.sft, [0.5, 0.4, 0.25, 0, 0])
    np.testing.assert_allclose(c.off_rl, [0, 0.1, 0.2, 0.4, 0])

  def test_jit_with_traced_gates(self):
    f = lambda g, go: obj.hpt_switch(self.R, self.M, gate=g, gate_off=go)
    eager, jitted = f(0, 2), jax.jit(f)(0, 2)
    for a, b in zip(eager, jitted):
      np.testing.assert_array_equal(a, b)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "strategy must be one of"):
      obj.hpt_switch(self.R, self.M, strategy="mix")
    with self.assertRaisesRegex(ValueError, "table must have shape"):
      obj.hpt_switch(self.R, self.M, strategy="soft",
                     table=np.zeros((4, 3), np.float32))
    with self.assertRaisesRegex(ValueError, "table is used by strategy"):
      obj.hpt_switch(self.R, self.M, table=np.zeros((5, 3), np.float32))
    with self.assertRaisesRegex(ValueError, "mask_BxG must have shape"):
      obj.hpt_switch(self.R, self.M[:, :3])


if __name__ == "__main__":
  absltest.main()
