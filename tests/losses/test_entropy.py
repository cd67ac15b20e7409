"""Entropy from logits, entropy terms, top-entropy mask, adaptive coef."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _aggregation as agg
from jaxrl_group.losses import _entropy as ent

C = 8.0  # Dr.GRPO's constant for seq_mean_token_sum_norm


def np_entropy(logits, temperature=1.0):
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)


def logits_problem(shape=(2, 3, 7, 11), seed=0, dtype=np.float32):
  return (2 * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def whole(logits, temperature=1.0):
  return ent.entropy_from_logits(logits, temperature=temperature)


def chunked(chunk):
  def f(logits, temperature=1.0):
    return ent.entropy_from_logits_chunked(logits, chunk_size=chunk,
                                           temperature=temperature)
  return f


def central_difference(f, x, v, eps=1e-6):
  return (f(x + eps * v) - f(x - eps * v)) / (2 * eps)


class EntropyFromLogitsTest(parameterized.TestCase):

  def test_hand_values(self):
    # Uniform over 2: ln 2. Logits [0, ln 3]: p = (1/4, 3/4),
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351. Uniform over 5: ln 5.
    # A banned (-inf) token counts as absent: [0, 0, -inf] -> ln 2.
    logits = np.array([[0.0, 0.0, -np.inf], [0.0, math.log(3.0), -np.inf]],
                      np.float32)
    expected = [math.log(2.0), -(0.25 * math.log(0.25) +
                                 0.75 * math.log(0.75))]
    for fn in (whole, chunked(1)):
      np.testing.assert_allclose(fn(logits), expected, rtol=1e-6)
      np.testing.assert_allclose(fn(np.zeros((3, 5), np.float32)),
                                 [math.log(5.0)] * 3, rtol=1e-6)
      g = jax.grad(lambda x, fn=fn: jnp.sum(fn(x)))(logits)
      self.assertTrue(np.all(np.isfinite(g)))
      np.testing.assert_allclose(g[:, 2], 0.0)

  @parameterized.named_parameters(
      ("TxV", (7, 11)), ("BxTxV", (3, 7, 11)), ("BxGxTxV", (2, 3, 7, 11)))
  def test_matches_numpy(self, shape):
    logits = logits_problem(shape)
    for tau in (1.0, 0.5, 2.0):
      out = whole(logits, tau)
      self.assertEqual(out.shape, shape[:-1])
      self.assertEqual(out.dtype, jnp.float32)
      np.testing.assert_allclose(out, np_entropy(logits, tau), rtol=1e-5,
                                 atol=1e-6)

  def test_bfloat16_is_upcast(self):
    low = jnp.asarray(logits_problem(), jnp.bfloat16)
    out = whole(low)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, np_entropy(np.asarray(low, np.float32)),
                               rtol=1e-5, atol=1e-6)

  def test_gradient_is_minus_p_times_centred_logits(self):
    # dH/dz_v = -p_v (z_v - E_p z); z = logits / tau.
    logits = logits_problem((3, 5, 6))
    tau = 0.8
    z = logits.astype(np.float64) / tau
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = -p * (z - np.sum(p * z, -1, keepdims=True)) / tau
    for fn in (whole, chunked(2)):
      g = jax.grad(lambda x, fn=fn: jnp.sum(fn(x, tau)))(logits)
      np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)

  @parameterized.named_parameters(
      ("chunk1", 1), ("chunk3_not_dividing", 3), ("chunk_T", 7),
      ("chunk_above_T", 9))
  def test_chunked_equals_whole(self, chunk):
    logits = logits_problem()
    w = np.random.default_rng(1).normal(size=logits.shape[:-1])
    w = w.astype(np.float32)
    np.testing.assert_allclose(chunked(chunk)(logits, 0.7),
                               whole(logits, 0.7), rtol=1e-6, atol=1e-6)

    def loss(fn):
      return lambda x, t: jnp.sum(w * jnp.cos(fn(x, t)))

    g_whole = jax.grad(loss(whole), (0, 1))(logits, 0.7)
    g_chunk = jax.grad(loss(chunked(chunk)), (0, 1))(logits, 0.7)
    np.testing.assert_allclose(g_chunk[0], g_whole[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_chunk[1], g_whole[1], rtol=1e-5)

  @parameterized.named_parameters(("whole", None), ("chunked", 3))
  def test_gradient_matches_finite_differences(self, chunk):
    fn = whole if chunk is None else chunked(chunk)
    with jax.enable_x64(True):
      logits = logits_problem((2, 7, 5), dtype=np.float64)
      rng = np.random.default_rng(2)
      w = rng.normal(size=logits.shape[:-1])
      v = rng.normal(size=logits.shape)

      def f(x, t=1.3):
        return jnp.sum(w * fn(x, t))

      np.testing.assert_allclose(np.sum(jax.grad(f)(logits) * v),
                                 central_difference(f, logits, v), rtol=1e-6)
      np.testing.assert_allclose(
          jax.grad(lambda t: f(logits, t))(1.3),
          central_difference(lambda t: f(logits, t), 1.3, 1.0), rtol=1e-6)

  def test_chunked_peak_memory_is_one_chunk(self):
    b, t, v, chunk = 8, 256, 2000, 16
    x = jax.ShapeDtypeStruct((b, t, v), jnp.float32)
    one_chunk = b * chunk * v * 4

    def temp_bytes(f):
      return jax.jit(f).lower(x).compile().memory_analysis(
      ).temp_size_in_bytes

    # A few chunk-sized buffers (on CPU: 2 forward, 3 backward), never a
    # [B, T, V] one (16 chunks here).
    self.assertLess(temp_bytes(chunked(chunk)), 4 * one_chunk)
    self.assertLess(
        temp_bytes(jax.grad(lambda x: jnp.sum(chunked(chunk)(x)))),
        4 * one_chunk)

  def test_jit_equals_eager(self):
    logits = logits_problem()
    f = jax.jit(lambda x, t: chunked(3)(x, t))
    np.testing.assert_allclose(f(logits, 0.7), chunked(3)(logits, 0.7),
                               rtol=1e-6)

  def test_errors_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, "logits_BxTxV must have rank"):
      whole(np.zeros(5, np.float32))
    with self.assertRaisesRegex(TypeError, "logits_BxTxV must be a floating"):
      chunked(2)(np.zeros((2, 5), np.int32))
    with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
      whole(np.zeros((2, 5), np.float32), -1.0)
    with self.assertRaisesRegex(ValueError, "chunk_size must be"):
      chunked(0)(np.zeros((2, 5), np.float32))


# Two sequences in one group, plus an empty one: entropies [1, 2, 3] (3 valid)
# and [4, -, -] (1 valid).
H = np.array([[[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]]],
             np.float32)
M = np.array([[[True, True, True], [True, False, False],
               [False, False, False]]])


# (numerator, denominator) of agg(H, M, mode), by hand.
GOLDEN = {
    "token_mean": (10.0, 4.0),  # (1+2+3+4) / 4 tokens
    "seq_mean_token_mean": (2.0 + 4.0, 2.0),  # mean(2, 4) over 2 sequences
    "seq_mean_token_sum": (10.0, 2.0),
    "seq_mean_token_sum_norm": (10.0, 2 * C),
    "sum": (10.0, 1.0),
}
MODES = [(m, m) for m in agg.AGGREGATIONS]


class EntropyBonusTest(parameterized.TestCase):

  def test_every_aggregation_mode_has_a_golden_value(self):
    self.assertContainsSubset(agg.AGGREGATIONS, GOLDEN)

  @parameterized.named_parameters(*MODES)
  def test_golden_per_mode(self, mode):
    total, weight = GOLDEN[mode]
    d = ent.entropy_bonus(H, M, coef=0.01, mode=mode, norm_constant=C)
    np.testing.assert_allclose(d.total, -0.01 * total, rtol=1e-6)
    np.testing.assert_allclose(d.weight, weight)
    np.testing.assert_allclose(d.value, -0.01 * total / weight, rtol=1e-6)

  def test_gradient_and_masked_tokens(self):
    # token_mean: d value / d H = -coef * M / 4; masked entries get 0 even
    # when they hold NaN-free garbage.
    g = jax.grad(lambda h: ent.entropy_bonus(h, M, coef=0.01,
                                             mode="token_mean").value)(H)
    np.testing.assert_allclose(g, -0.01 * M / 4.0, rtol=1e-6)
    garbage = np.where(M, H, 1e6).astype(np.float32)
    np.testing.assert_allclose(
        ent.entropy_bonus(garbage, M, coef=0.01, mode="token_mean").value,
        -0.01 * 2.5, rtol=1e-6)

  def test_jit_and_traced_coef(self):
    f = jax.jit(lambda h, c: ent.entropy_bonus(h, M, coef=c,
                                               mode="token_mean").value)
    np.testing.assert_allclose(f(H, 0.01), -0.025, rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "entropy_BxGxT must have rank"):
      ent.entropy_bonus(H[0], M, coef=0.1, mode="token_mean")
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      ent.entropy_bonus(H, M.astype(np.float32), coef=0.1, mode="token_mean")
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      ent.entropy_bonus(H, M, coef=0.1, mode="token-mean")


class TargetedEntropyTest(parameterized.TestCase):

  def test_golden_values_both_sides(self):
    # Token mean of H over M = 2.5 (see EntropyBonusTest).
    # target 0.55: 0.001 * |2.5 - 0.55| = 0.00195 (defaults).
    d = ent.targeted_entropy(H, M)
    np.testing.assert_allclose(d.value, 0.001 * 1.95, rtol=1e-5)
    # target 3: 0.1 * |2.5 - 3| = 0.05.
    d = ent.targeted_entropy(H, M, target=3.0, coef=0.1)
    np.testing.assert_allclose(d.value, 0.05, rtol=1e-5)
    # seq_mean_token_mean: mean(2, 4) = 3 -> |3 - 1| * 0.1 = 0.2.
    d = ent.targeted_entropy(H, M, target=1.0, coef=0.1,
                             mode="seq_mean_token_mean")
    np.testing.assert_allclose(d.value, 0.2, rtol=1e-5)
    # Exactly on target: value 0 and gradient 0.
    d = ent.targeted_entropy(H, M, target=2.5, coef=0.1)
    self.assertEqual(float(d.value), 0.0)

  def test_gradient_pulls_toward_target(self):
    # d/dH_t = coef * sign(mean - target) * M_t / N.
    for target, sign in ((0.55, 1.0), (3.0, -1.0)):
      g = jax.grad(lambda h, target=target: ent.targeted_entropy(
          h, M, target=target, coef=0.1).value)(H)
      np.testing.assert_allclose(g, 0.1 * sign * M / 4.0, rtol=1e-6)

  def test_micro_batches_are_exact_with_entropy_mean(self):
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 1.2, size=(4, 2, 6)).astype(np.float32)
    h[:2] += 1.0  # the first half sits above the target, the second below
    mask = rng.uniform(size=h.shape) < 0.8
    target, coef = 1.0, 0.5

    def full(x):
      return ent.targeted_entropy(x, mask, target=target, coef=coef).value

    mean = float(np.sum(h * mask) / mask.sum())
    expected = coef * abs(mean - target)
    np.testing.assert_allclose(full(h), expected, rtol=1e-5)

    def split(x, entropy_mean):
      parts = [ent.targeted_entropy(x[i:i + 2], mask[i:i + 2], target=target,
                                    coef=coef, entropy_mean=entropy_mean)
               for i in (0, 2)]
      return agg.combine(*parts).value

    np.testing.assert_allclose(split(h, mean), expected, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(split)(h, mean), jax.grad(full)(h),
                               rtol=1e-5, atol=1e-7)
    # Without the full-batch mean, each micro-batch uses its own side of the
    # target and the combined value is wrong: the documented pitfall.
    means = [np.sum(h[i:i + 2] * mask[i:i + 2]) / mask[i:i + 2].sum()
             for i in (0, 2)]
    self.assertNotEqual(np.sign(means[0] - target), np.sign(means[1] - target))
    wrong = agg.combine(*[ent.targeted_entropy(
        h[i:i + 2], mask[i:i + 2], target=target, coef=coef)
                          for i in (0, 2)]).value
    self.assertGreater(abs(float(wrong) - expected), 1e-3)

  def test_jit_equals_eager(self):
    f = jax.jit(lambda h, m: ent.targeted_entropy(h, M, entropy_mean=m).value)
    np.testing.assert_allclose(f(H, 2.5),
                               ent.targeted_entropy(H, M).value, rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "entropy_mean must be a scalar"):
      ent.targeted_entropy(H, M, entropy_mean=np.ones(2))
    with self.assertRaisesRegex(ValueError, "mask_BxGxT must have rank"):
      ent.targeted_entropy(H, M[0])


class TopEntropyMaskTest(parameterized.TestCase):

  def test_ties_are_kept(self):
    # Valid entropies [1, 2, 2, 2, 3] (and a masked 9). rho = 0.5: the 0.5
    # quantile at h = 0.5 * 4 = 2 is 2, so every 2 and the 3 are kept: 4
    # tokens, more than rho * n = 2.5.
    h = np.array([[[1.0, 2.0, 2.0, 2.0, 3.0, 9.0]]], np.float32)
    m = np.array([[[True] * 5 + [False]]])
    out = ent.top_entropy_mask(h, m, quantile_rho=0.5)
    np.testing.assert_array_equal(out, [[[False, True, True, True, True,
                                          False]]])
    # rho = 0.2: h = 0.8 * 4 = 3.2 -> 2 + 0.2 * (3 - 2) = 2.2: only the 3.
    out = ent.top_entropy_mask(h, m, quantile_rho=0.2)
    np.testing.assert_array_equal(out, [[[False] * 4 + [True, False]]])
    # All equal: every valid token is tied at the threshold.
    out = ent.top_entropy_mask(np.ones_like(h), m, quantile_rho=0.1)
    np.testing.assert_array_equal(out, m)

  @parameterized.parameters(1.0, 0.8, 0.5, 0.2, 0.05)
  def test_counts_match_numpy_linear_quantile(self, rho):
    rng = np.random.default_rng(3)
    h = rng.exponential(size=(4, 3, 10)).astype(np.float32)
    m = rng.uniform(size=h.shape) < 0.7
    threshold = np.quantile(h[m], 1 - rho)  # numpy's default: linear
    expected = m & (h >= threshold)
    out = ent.top_entropy_mask(h, m, quantile_rho=rho)
    np.testing.assert_array_equal(out, expected)
    self.assertEqual(int(out.sum()), int(expected.sum()))
    if rho == 1.0:
      np.testing.assert_array_equal(out, m)  # rho = 1 keeps all valid
    jitted = jax.jit(lambda r: ent.top_entropy_mask(h, m, quantile_rho=r))
    np.testing.assert_array_equal(jitted(rho), out)

  def test_no_valid_token(self):
    out = ent.top_entropy_mask(H, np.zeros_like(M), quantile_rho=0.5)
    self.assertFalse(np.any(out))

  def test_errors(self):
    for bad in (0.0, 1.5, -0.1):
      with self.assertRaisesRegex(ValueError, "quantile_rho must be in"):
        ent.top_entropy_mask(H, M, quantile_rho=bad)


class AdaptiveEntropyCoefTest(parameterized.TestCase):

  def test_steps_by_hand(self):
    # target 0.2, delta 0.005, bounds [0, 0.012], init 0.002:
    #   H=0.1 (<= target): coef 0.007, effective 0.007
    #   H=0.2 (== target, counts as low): coef 0.012, effective 0.012
    #   H=0.15: coef min(0.017, 0.012) = 0.012 (clipped), effective 0.012
    #   H=0.5: coef 0.007, effective 0 (gate closed)
    #   H=0.3: coef 0.002, effective 0
    #   H=0.3: coef max(-0.003, 0) = 0, effective 0
    #   H=0.1: coef 0.005, effective 0.005
    ctrl = ent.adaptive_entropy_coef(init_coef=0.002, coef_max=0.012)
    state = ctrl.init()
    self.assertEqual(state.coef.dtype, jnp.float32)
    self.assertEqual(state.coef.shape, ())
    self.assertEqual(float(state.effective_coef), 0.0)
    expected = [(0.1, 0.007, 0.007), (0.2, 0.012, 0.012),
                (0.15, 0.012, 0.012), (0.5, 0.007, 0.0), (0.3, 0.002, 0.0),
                (0.3, 0.0, 0.0), (0.1, 0.005, 0.005)]
    update = jax.jit(ctrl.update)
    for h, coef, effective in expected:
      eager = ctrl.update(h, state)
      state = update(jnp.float32(h), state)
      chex_equal = jax.tree.map(np.testing.assert_allclose, eager, state)
      del chex_equal
      np.testing.assert_allclose(state.coef, coef, atol=1e-7)
      np.testing.assert_allclose(state.effective_coef, effective, atol=1e-7)
      self.assertEqual(state.effective_coef.dtype, jnp.float32)

  def test_gate_open_at_init_and_bonus(self):
    ctrl = ent.adaptive_entropy_coef(init_coef=0.1, gate_open_at_init=True)
    state = ctrl.init()
    np.testing.assert_allclose(state.effective_coef, 0.1)
    bonus = ent.entropy_bonus(H, M, coef=state.effective_coef,
                              mode="token_mean")
    np.testing.assert_allclose(bonus.value, -0.25, rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "init_coef must lie in"):
      ent.adaptive_entropy_coef(init_coef=2.0)
    with self.assertRaisesRegex(ValueError, "delta must be >= 0"):
      ent.adaptive_entropy_coef(init_coef=0.0, delta=-1.0)
    ctrl = ent.adaptive_entropy_coef(init_coef=0.0)
    with self.assertRaisesRegex(ValueError, "entropy_mean must be a scalar"):
      ctrl.update(np.ones(3), ctrl.init())


if __name__ == "__main__":
  absltest.main()
