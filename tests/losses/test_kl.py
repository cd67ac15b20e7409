"""KL estimators, the KL terms in the loss and the reward, KL controllers."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _aggregation as agg
from jaxrl_group.losses import _kl

C = 8.0  # Dr.GRPO's constant for seq_mean_token_sum_norm

# delta = logp - ref_logp = [0.5, -1, 0, 2].
LOGP = np.array([-1.0, -2.0, -0.5, -0.25], np.float32)
REF = np.array([-1.5, -1.0, -0.5, -2.25], np.float32)
DELTA = LOGP - REF
E = math.e
GOLDEN = {
    "k1": [0.5, -1.0, 0.0, 2.0],
    "k2": [0.125, 0.5, 0.0, 2.0],  # delta^2 / 2
    "abs": [0.5, 1.0, 0.0, 2.0],
    # x = -delta = [-0.5, 1, 0, -2]; e^x - x - 1:
    "k3": [math.exp(-0.5) - 0.5, E - 2.0, 0.0, math.exp(-2.0) + 1.0],
}
# The analytic gradients wrt logp: k1 1, k2 delta, abs sign(delta),
# k3 d/dlogp (e^x - x - 1) = 1 - e^x with x = ref - logp.
GRADS = {
    "k1": [1.0, 1.0, 1.0, 1.0],
    "k2": list(DELTA),
    "abs": [1.0, -1.0, 0.0, 1.0],
    "k3": [1 - math.exp(-0.5), 1 - E, 0.0, 1 - math.exp(-2.0)],
}
ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
BASES = ("k1", "k2", "k3", "abs")
ALL_NAMES = (BASES + tuple(f"{b}+" for b in BASES) + tuple(ALIASES)
             + tuple(f"{a}+" for a in ALIASES))


def base_of(name):
  base = name.rstrip("+")
  return ALIASES.get(base, base)


def grad_wrt_logp(name, logp=LOGP, ref=REF, **kw):
  return jax.grad(lambda x: jnp.sum(
      _kl.kl_estimate(x, ref, estimator=name, **kw)))(logp)


class EstimatorTest(parameterized.TestCase):

  def test_exported_names(self):
    self.assertEqual(_kl.KL_ESTIMATORS, ("k1", "k2", "k3", "abs", "k1+", "k2+",
                                         "k3+", "abs+"))
    self.assertEqual(_kl.KL_ALIASES, ALIASES)

  @parameterized.parameters(*ALL_NAMES)
  def test_value_is_the_base_estimator(self, name):
    for clamp in (True, False):  # no clamp binds on these values
      out = _kl.kl_estimate(LOGP, REF, estimator=name, clamp=clamp)
      np.testing.assert_allclose(out, GOLDEN[base_of(name)], rtol=1e-6,
                                 atol=1e-7)

  @parameterized.parameters(*ALL_NAMES)
  def test_gradient(self, name):
    # Straight-through ("+") names have k2's gradient delta whatever their
    # value (verl-project/verl#6058); the others their own gradient.
    expected = GRADS["k2" if name.endswith("+") else base_of(name)]
    np.testing.assert_allclose(grad_wrt_logp(name), expected, rtol=1e-6,
                               atol=1e-7)
    g_ref = jax.grad(lambda r: jnp.sum(
        _kl.kl_estimate(LOGP, r, estimator=name)))(REF)
    np.testing.assert_allclose(g_ref, -np.asarray(expected), rtol=1e-6,
                               atol=1e-7)

  @parameterized.parameters("k1", "k2", "k3", "k3+", "abs+")
  def test_gradient_matches_finite_differences(self, name):
    with jax.enable_x64(True):
      rng = np.random.default_rng(0)
      logp = -rng.uniform(0.1, 3.0, size=(2, 3, 5))
      ref = -rng.uniform(0.1, 3.0, size=(2, 3, 5))
      v = rng.normal(size=logp.shape)
      w = rng.normal(size=logp.shape)

      def f(x, est):
        return jnp.sum(w * _kl.kl_estimate(x, ref, estimator=est))

      grad_name = "k2" if name.endswith("+") else name
      eps = 1e-6
      fd = (f(logp + eps * v, grad_name) - f(logp - eps * v, grad_name)) / (
          2 * eps)
      np.testing.assert_allclose(np.sum(jax.grad(f)(logp, name) * v), fd,
                                 rtol=1e-6)

  def test_extreme_log_ratios(self):
    # delta = -1000: x = 1000 -> clamp 20 -> e^20 - 21 -> clamp 10.
    # delta = +1000: x = -1000 -> clamp -20 -> e^-20 + 19 -> clamp 10.
    logp = np.array([-1000.0, 0.0, -30.0], np.float32)
    ref = np.array([0.0, -1000.0, 0.0], np.float32)
    for name in ("k3", "low_var_kl", "k3+", "low_var_kl+"):
      out = _kl.kl_estimate(logp, ref, estimator=name)
      np.testing.assert_allclose(out, [10.0, 10.0, 10.0])
      g = grad_wrt_logp(name, logp, ref)
      self.assertTrue(np.all(np.isfinite(g)), g)
    # Where a clamp binds, the clamped k3 has no gradient; k3+ has delta.
    np.testing.assert_allclose(grad_wrt_logp("k3", logp, ref), [0, 0, 0])
    np.testing.assert_allclose(grad_wrt_logp("k3+", logp, ref),
                               logp - ref)
    # TRL's unclamped k3 overflows in float32: the reason for the clamps.
    unclamped = _kl.kl_estimate(logp, ref, estimator="k3", clamp=False)
    self.assertEqual(float(unclamped[0]), np.inf)
    np.testing.assert_allclose(unclamped[1], 999.0)
    np.testing.assert_allclose(unclamped[2], math.exp(30.0) - 31.0,
                               rtol=1e-6)

  def test_clamp_boundaries(self):
    # x = 3: e^3 - 4 = 16.09 > 10 -> 10 (clamp=True); unclamped 16.0855.
    logp, ref = np.float32([-3.0]), np.float32([0.0])
    np.testing.assert_allclose(
        _kl.kl_estimate(logp, ref, estimator="k3"), [10.0])
    np.testing.assert_allclose(
        _kl.kl_estimate(logp, ref, estimator="k3", clamp=False),
        [math.exp(3.0) - 4.0], rtol=1e-6)

  def test_jit_equals_eager(self):
    for name in ALL_NAMES:
      f = jax.jit(lambda x, r, name=name: _kl.kl_estimate(x, r,
                                                          estimator=name))
      np.testing.assert_allclose(
          f(LOGP, REF), _kl.kl_estimate(LOGP, REF, estimator=name),
          rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(
        ValueError, r"unknown estimator 'k4'; known estimators: k1, k2, k3, "
        r"abs, k1\+, k2\+, k3\+, abs\+ \(aliases: kl->k1, mse->k2, "
        r"low_var_kl->k3"):
      _kl.kl_estimate(LOGP, REF, estimator="k4")
    with self.assertRaisesRegex(ValueError, "full"):
      _kl.kl_estimate(LOGP, REF, estimator="full")
    with self.assertRaisesRegex(ValueError,
                                "ref_logp_BxGxT must have the shape"):
      _kl.kl_estimate(LOGP, REF[:2], estimator="k1")
    with self.assertRaisesRegex(TypeError, "logp_BxGxT must be a floating"):
      _kl.kl_estimate(np.arange(4), REF, estimator="k1")


# Two sequences and an empty one; per-token k1 = delta at valid tokens:
# [0.5, -1, 2] (3 valid) and [1, -, -] (1 valid). Masked tokens hold
# garbage (-inf and 1e30) that must not leak into value or gradient.
P_LOGP = np.array([[[-1.0, -2.0, -0.25], [-1.0, -np.inf, 1e30],
                    [-np.inf, 0.0, 0.0]]], np.float32)
P_REF = np.array([[[-1.5, -1.0, -2.25], [-2.0, 0.0, -np.inf],
                   [0.0, 0.0, 0.0]]], np.float32)
P_MASK = np.array([[[True, True, True], [True, False, False],
                    [False, False, False]]])
# (numerator, denominator) of agg(k1, M, mode), by hand:
# sum = 0.5 - 1 + 2 + 1 = 2.5; per-sequence means 1.5 / 3 = 0.5 and 1.
PENALTY_GOLDEN = {
    "token_mean": (2.5, 4.0),
    "seq_mean_token_mean": (0.5 + 1.0, 2.0),
    "seq_mean_token_sum": (2.5, 2.0),
    "seq_mean_token_sum_norm": (2.5, 2 * C),
    "sum": (2.5, 1.0),
}
MODES = [(m, m) for m in agg.AGGREGATIONS]


class KLPenaltyTest(parameterized.TestCase):

  def test_every_aggregation_mode_has_a_golden_value(self):
    self.assertContainsSubset(agg.AGGREGATIONS, PENALTY_GOLDEN)

  @parameterized.named_parameters(*MODES)
  def test_aggregation_honours_the_mode(self, mode):
    total, weight = PENALTY_GOLDEN[mode]
    d = _kl.kl_penalty(P_LOGP, P_REF, P_MASK, estimator="k1", coef=0.1,
                       mode=mode, norm_constant=C)
    np.testing.assert_allclose(d.total, 0.1 * total, rtol=1e-6)
    np.testing.assert_allclose(d.weight, weight)
    np.testing.assert_allclose(d.value, 0.1 * total / weight, rtol=1e-6)
    self.assertTrue(np.isfinite(float(d.value)))

  @parameterized.named_parameters(*MODES)
  def test_gradient_and_masked_tokens(self, mode):
    # k2: d/dlogp = coef * delta * (per-token weight of the mode); masked
    # tokens get exactly 0 although their inputs are -inf / 1e30.
    def f(x):
      return _kl.kl_penalty(x, P_REF, P_MASK, estimator="k2", coef=0.1,
                            mode=mode, norm_constant=C).value

    g = jax.grad(f)(P_LOGP)
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_array_equal(g[~P_MASK], 0.0)
    delta = np.where(P_MASK, P_LOGP - P_REF, 0)
    token_weight = {
        "token_mean": np.full(P_MASK.shape, 1 / 4.0),
        "seq_mean_token_mean": np.array([[[1 / 6] * 3, [1 / 2.0] * 3,
                                          [0.0] * 3]]),
        "seq_mean_token_sum": np.full(P_MASK.shape, 1 / 2.0),
        "seq_mean_token_sum_norm": np.full(P_MASK.shape, 1 / (2 * C)),
        "sum": np.ones(P_MASK.shape),
    }[mode]
    np.testing.assert_allclose(g[P_MASK],
                               (0.1 * delta * token_weight)[P_MASK],
                               rtol=1e-5)

  def test_changing_a_masked_token_changes_nothing(self):
    other = P_LOGP.copy()
    other[0, 1, 1] = -3.0

    def f(x):
      return _kl.kl_penalty(x, P_REF, P_MASK, estimator="k3", coef=0.1,
                            mode="token_mean").value

    self.assertEqual(float(f(other)), float(f(P_LOGP)))
    np.testing.assert_array_equal(jax.grad(f)(other), jax.grad(f)(P_LOGP))

  def test_micro_batches_combine_to_the_full_batch(self):
    rng = np.random.default_rng(1)
    logp = -rng.uniform(0.1, 2, size=(4, 2, 5)).astype(np.float32)
    ref = -rng.uniform(0.1, 2, size=(4, 2, 5)).astype(np.float32)
    mask = rng.uniform(size=logp.shape) < 0.7
    kw = dict(estimator="low_var_kl", coef=0.04, mode="token_mean")
    full = _kl.kl_penalty(logp, ref, mask, **kw)
    parts = [_kl.kl_penalty(logp[i:i + 2], ref[i:i + 2], mask[i:i + 2], **kw)
             for i in (0, 2)]
    np.testing.assert_allclose(agg.combine(*parts).value, full.value,
                               rtol=1e-6)

  def test_jit_and_traced_coef(self):
    f = jax.jit(lambda x, c: _kl.kl_penalty(
        x, P_REF, P_MASK, estimator="k1", coef=c, mode="token_mean").value)
    np.testing.assert_allclose(f(P_LOGP, 0.1), 0.1 * 2.5 / 4, rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "known estimators"):
      _kl.kl_penalty(P_LOGP, P_REF, P_MASK, estimator="k5", coef=0.1,
                     mode="token_mean")
    with self.assertRaisesRegex(ValueError, "ref_logp_BxGxT must have shape"):
      _kl.kl_penalty(P_LOGP, P_REF[..., :2], P_MASK, estimator="k1",
                     coef=0.1, mode="token_mean")
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      _kl.kl_penalty(P_LOGP, P_REF, P_MASK.astype(np.float32),
                     estimator="k1", coef=0.1, mode="token_mean")
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      _kl.kl_penalty(P_LOGP, P_REF, P_MASK, estimator="k1", coef=0.1,
                     mode="token-mean")


class KLInRewardTest(parameterized.TestCase):

  def test_golden_and_stop_gradient(self):
    out = _kl.kl_in_reward(P_LOGP, P_REF, P_MASK, coef=0.05)
    # k1 per token times 0.05; 0 at masked tokens.
    expected = 0.05 * np.array([[[0.5, -1.0, 2.0], [1.0, 0.0, 0.0],
                                 [0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(out.penalty_BxGxT, expected, rtol=1e-6)
    # RLOO: summed over each sequence.
    np.testing.assert_allclose(out.penalty_BxG, 0.05 * np.array([[1.5, 1.0,
                                                                  0.0]]),
                               rtol=1e-6)
    # verl's current_kl: mean over sequences of the token means, unscaled.
    np.testing.assert_allclose(out.kl_mean.value, (0.5 + 1.0) / 2,
                               rtol=1e-6)
    # The old log-probs carry no gradient into the reward.
    g = jax.grad(lambda x: jnp.sum(
        _kl.kl_in_reward(x, P_REF, P_MASK, coef=0.05).penalty_BxGxT))(P_LOGP)
    np.testing.assert_array_equal(g, 0.0)

  @parameterized.parameters("k3", "k3+", "abs", "mse")
  def test_other_estimators(self, name):
    out = _kl.kl_in_reward(P_LOGP, P_REF, P_MASK, coef=0.5, estimator=name)
    kl = _kl.kl_estimate(np.where(P_MASK, P_LOGP, 0),
                         np.where(P_MASK, P_REF, 0), estimator=name)
    np.testing.assert_allclose(out.penalty_BxGxT,
                               np.where(P_MASK, 0.5 * kl, 0), rtol=1e-6)
    self.assertTrue(np.all(np.isfinite(out.penalty_BxGxT)))

  def test_jit_equals_eager(self):
    f = jax.jit(lambda x, c: _kl.kl_in_reward(x, P_REF, P_MASK, coef=c))
    eager = _kl.kl_in_reward(P_LOGP, P_REF, P_MASK, coef=0.05)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 f(P_LOGP, 0.05), eager)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "old_logp_BxGxT must have rank"):
      _kl.kl_in_reward(P_LOGP[0], P_REF, P_MASK, coef=0.1)
    with self.assertRaisesRegex(ValueError, "known estimators"):
      _kl.kl_in_reward(P_LOGP, P_REF, P_MASK, coef=0.1, estimator="kl2")


class ControllerTest(parameterized.TestCase):

  def test_adaptive_steps_by_hand(self):
    # verl defaults: coef 0.001, target 0.1, horizon 10000; n_steps 256.
    # kl 0.2:  e = clip(1.0, ±0.2) = 0.2   -> x (1 + 0.2 * 0.0256) = 1.00512
    # kl 0.05: e = clip(-0.5)      = -0.2  -> x 0.99488
    # kl 0.11: e = 0.1                     -> x 1.00256
    # kl 0.1:  e = 0                       -> x 1
    # kl 0.0 with n_steps 5000: e = -0.2   -> x (1 - 0.2 * 0.5) = 0.9
    ctrl = _kl.adaptive_kl_controller()
    state = ctrl.init()
    self.assertEqual(state.coef.dtype, jnp.float32)
    self.assertEqual(state.coef.shape, ())
    coef = 0.001
    steps = [(0.2, 256, 1.00512), (0.05, 256, 0.99488), (0.11, 256, 1.00256),
             (0.1, 256, 1.0), (0.0, 5000, 0.9)]
    update = jax.jit(ctrl.update)
    for kl, n, factor in steps:
      eager = ctrl.update(kl, n, state)
      state = update(jnp.float32(kl), jnp.int32(n), state)
      np.testing.assert_allclose(eager.coef, state.coef, rtol=1e-6)
      coef *= factor
      np.testing.assert_allclose(state.coef, coef, rtol=1e-6)
      self.assertEqual(state.coef.dtype, jnp.float32)
    # 0.001 * (1.00512 * 0.99488 = 1 - 0.00512^2 = 0.9999737856)
    #   * 1.00256 (-> 1.0025337190) * 0.9 = 0.000902280347
    np.testing.assert_allclose(state.coef, 0.000902280347, rtol=1e-6)

  def test_fixed_controller_keeps_its_coefficient(self):
    ctrl = _kl.fixed_kl_controller(0.04)
    state = ctrl.init()
    for kl in (0.0, 0.5, 3.0):
      state = jax.jit(ctrl.update)(kl, 128, state)
    np.testing.assert_allclose(state.coef, 0.04)
    self.assertEqual(state.coef.dtype, jnp.float32)

  def test_controller_feeds_the_penalty(self):
    ctrl = _kl.adaptive_kl_controller(init_coef=0.1, target_kl=0.5)
    out = _kl.kl_in_reward(P_LOGP, P_REF, P_MASK, coef=ctrl.init().coef)
    state = ctrl.update(out.kl_mean.value, 2, ctrl.init())
    # kl_mean 0.75: e = 0.5 -> 0.2; coef 0.1 * (1 + 0.2 * 2 / 10000).
    np.testing.assert_allclose(state.coef, 0.1 * (1 + 0.4 / 10000),
                               rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "target_kl must be > 0"):
      _kl.adaptive_kl_controller(target_kl=0.0)
    with self.assertRaisesRegex(ValueError, "horizon must be > 0"):
      _kl.adaptive_kl_controller(horizon=-1)
    with self.assertRaisesRegex(ValueError, "init_coef must be >= 0"):
      _kl.adaptive_kl_controller(init_coef=-0.1)
    ctrl = _kl.adaptive_kl_controller()
    with self.assertRaisesRegex(ValueError, "current_kl must be a scalar"):
      ctrl.update(np.ones(2), 1, ctrl.init())


if __name__ == "__main__":
  absltest.main()
