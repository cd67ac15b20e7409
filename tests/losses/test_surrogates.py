"""Per-token surrogates: golden values, gradients, stop-gradients and masks."""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.losses import _aggregation as agg
from jaxrl_group.losses import _surrogates as sur

OLD = -1.0  # old log-prob of every token in the hand-made cases


def x64(fn):
  """Runs a test with float64 enabled (golden values and gradients)."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with jax.enable_x64(True):
      return fn(*args, **kwargs)

  return wrapper


def tokens(ratios, adv, logp=None):
  """One sequence ``[1, 1, N]`` with the given ratios and per-token A."""
  r = np.asarray(ratios, np.float64)[None, None, :]
  if logp is None:
    logp = OLD + np.log(r)
  else:
    logp = np.asarray(logp, np.float64)[None, None, :]
  old = logp - np.log(r)
  adv = np.broadcast_to(np.asarray(adv, np.float64), r.shape[-1:])
  return (jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv)[None, None],
          jnp.ones(r.shape, bool))


def metric(metrics, name):
  return float(metrics[name].value)


_JIT_CACHE = {}


def jcall(f, *args, **kw):
  """Calls ``f`` under ``jax.jit`` (array keywords traced, others static).

  Eager dispatch compiles every primitive for every new shape, which is
  several times slower than one compiled call; the jitted function is cached
  by its static arguments.
  """
  arrays = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
  static = tuple(sorted((k, v) for k, v in kw.items() if k not in arrays))
  key = (f, static)
  if key not in _JIT_CACHE:
    _JIT_CACHE[key] = jax.jit(functools.partial(f, **dict(static)))
  return _JIT_CACHE[key](*args, **arrays)


def problem(seed=0, b=2, g=3, t=5, scale=0.6):
  """Random float64 inputs with ragged lengths and one empty sequence."""
  rng = np.random.default_rng(seed)
  logp = -0.1 - 2.0 * rng.random((b, g, t))
  old = logp - scale * rng.normal(size=(b, g, t))
  adv = rng.normal(size=(b, g))
  lengths = rng.integers(1, t + 1, size=(b, g))
  lengths[0, 0] = 0
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  ent = np.exp(rng.normal(size=(b, g, t)))
  return dict(logp=jnp.asarray(logp), old=jnp.asarray(old),
              adv=jnp.asarray(adv), mask=jnp.asarray(mask),
              ent=jnp.asarray(ent))


# (test name, surrogate name, keyword arguments) for the shared tests;
# array-valued arguments come from ``extra``.
CASES = [
    ("ppo_clip", "ppo_clip", {}),
    # The dual clip and TRL's delta cannot both bind (the lower cap wins).
    ("ppo_clip_dual", "ppo_clip", dict(eps_high=0.28, clip_ratio_c=2.0)),
    ("ppo_clip_delta", "ppo_clip", dict(delta=1.5)),
    ("gspo", "gspo", dict(eps_low=0.2, eps_high=0.2)),
    ("gspo_token", "gspo_token", dict(eps_low=0.2, eps_high=0.2)),
    ("cispo_verl", "cispo", dict(convention="verl")),
    ("cispo_trl", "cispo", dict(convention="trl", eps_max=1.5)),
    ("sapo", "sapo", {}),
    ("gmpo", "gmpo", {}),
    ("reinforce", "reinforce", {}),
    ("reinforce_is", "reinforce", dict(is_threshold=1.5)),
    ("clip_cov", "clip_cov", dict(clip_cov_ratio=0.2)),
    ("kl_cov", "kl_cov", dict(kl_cov_ratio=0.2)),
    ("vespo", "vespo", {}),
    ("luspo", "luspo", dict(eps_low=0.2, eps_high=0.2)),
    ("hapo_clip", "hapo_clip", {}),
    ("hapo_clip_code", "hapo_clip", dict(neg_scale="code")),
]


def extra(name, p):
  """Array-valued keyword arguments a surrogate needs.

  The shared tests give clip_cov an "rbg" key, which compiles several times
  faster than the default threefry; the golden tests use default keys.
  """
  if name == "clip_cov":
    return dict(key=jax.random.key(3, impl="rbg"))
  if name == "hapo_clip":
    return dict(entropy_BxGxT=p["ent"])
  return {}


def call(name, kw, p, logp=None):
  """Runs surrogate ``name`` on the arrays of ``p`` (``logp`` overrides)."""
  f = sur.SURROGATES[name]
  return f(p["logp"] if logp is None else logp, p["old"], p["adv"],
           p["mask"], **kw, **extra(name, p))


def mode_of(name):
  return sur.FIXED_AGGREGATION.get(name, "token_mean")


# ---------------------------------------------------------------------------
# Golden values.


class PpoClipGoldenTest(parameterized.TestCase):

  @x64
  def test_inside_and_outside_the_clip_for_both_signs(self):
    # eps 0.2 / 0.2: the clip range is [0.8, 1.2].
    logp, old, adv, mask = tokens([1.1, 1.5, 0.5, 1.1, 1.5, 0.5],
                                  [1, 1, 1, -1, -1, -1])
    loss, m = jcall(sur.ppo_clip, logp, old, adv, mask)
    # A=+1: r=1.1 inside -> -1.1; r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped);
    #       r=0.5 -> max(-0.5, -0.8) = -0.5 (pessimistic, not clipped).
    # A=-1: r=1.1 -> 1.1; r=1.5 -> max(1.5, 1.2) = 1.5 (not clipped);
    #       r=0.5 -> max(0.5, 0.8) = 0.8 (clipped).
    np.testing.assert_allclose(loss[0, 0], [-1.1, -1.2, -0.5, 1.1, 1.5, 0.8],
                               rtol=1e-12)
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 1 / 6)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 1 / 6)
    self.assertAlmostEqual(metric(m, "clipfrac"), 2 / 6)  # verl pg_clipfrac
    self.assertAlmostEqual(metric(m, "dual_clipfrac"), 0.0)
    # ppo_kl = mean(-log r) = -2 (log 1.1 + log 1.5 + log 0.5) / 6.
    kl = -2 * (math.log(1.1) + math.log(1.5) + math.log(0.5)) / 6
    self.assertAlmostEqual(metric(m, "approx_kl"), kl, places=12)
    # k3 = mean(r - 1 - log r); ratio_mean = (1.1 + 1.5 + 0.5) / 3.
    k3 = np.mean([r - 1 - math.log(r) for r in (1.1, 1.5, 0.5)])
    self.assertAlmostEqual(metric(m, "approx_kl_k3"), k3, places=12)
    self.assertAlmostEqual(metric(m, "ratio_mean"), 3.1 / 3, places=12)

  @x64
  def test_decoupled_bounds(self):
    # eps_high 0.28 (DAPO): r=1.25, A=+1 is inside [0.8, 1.28] -> -1.25;
    # eps_low 0.2: r=0.75, A=-1 -> max(0.75, 0.8) = 0.8.
    logp, old, adv, mask = tokens([1.25, 0.75, 1.3], [1, -1, 1])
    loss, _ = jcall(sur.ppo_clip, logp, old, adv, mask, eps_high=0.28)
    np.testing.assert_allclose(loss[0, 0], [-1.25, 0.8, -1.28], rtol=1e-12)
    loss, _ = jcall(sur.ppo_clip, logp, old, adv, mask)  # 0.2 / 0.2
    np.testing.assert_allclose(loss[0, 0], [-1.2, 0.8, -1.2], rtol=1e-12)

  @x64
  def test_dual_clip(self):
    # c = 3: A=-1, r=5 -> min(max(5, 1.2), 3) = 3 (dual clip binds);
    # A=-1, r=2 -> min(2, 3) = 2; A=+1, r=5 -> max(-5, -1.2) = -1.2.
    logp, old, adv, mask = tokens([5.0, 2.0, 5.0], [-1, -1, 1])
    loss, m = jcall(sur.ppo_clip, logp, old, adv, mask, clip_ratio_c=3.0)
    np.testing.assert_allclose(loss[0, 0], [3.0, 2.0, -1.2], rtol=1e-12)
    self.assertAlmostEqual(metric(m, "dual_clipfrac"), 1 / 3)
    loss, m = jcall(sur.ppo_clip, logp, old, adv, mask)  # no dual clip
    np.testing.assert_allclose(loss[0, 0], [5.0, 2.0, -1.2], rtol=1e-12)
    self.assertAlmostEqual(metric(m, "dual_clipfrac"), 0.0)

  @x64
  def test_trl_delta(self):
    # delta = 2: A=-1, r=5 -> max(min(5, 2), 1.2) = 2; A=-1, r=1.5 -> 1.5
    # (below delta); A=+1, r=5 -> max(-2, -1.2) = -1.2.
    logp, old, adv, mask = tokens([5.0, 1.5, 5.0], [-1, -1, 1])
    loss, _ = jcall(sur.ppo_clip, logp, old, adv, mask, delta=2.0)
    np.testing.assert_allclose(loss[0, 0], [2.0, 1.5, -1.2], rtol=1e-12)

  @x64
  def test_log_ratio_clamp(self):
    # logp - old = 30 is clamped to 20: the ratio is e^20 (verl), A=-1.
    logp = jnp.full((1, 1, 1), 29.0)
    old = jnp.full((1, 1, 1), -1.0)
    adv = -jnp.ones((1, 1))
    mask = jnp.ones((1, 1, 1), bool)
    loss, _ = jcall(sur.ppo_clip, logp, old, adv, mask)
    np.testing.assert_allclose(loss[0, 0, 0], math.exp(20.0), rtol=1e-12)
    loss, _ = jcall(sur.ppo_clip, logp, old, adv, mask, log_ratio_clamp=None)
    np.testing.assert_allclose(loss[0, 0, 0], math.exp(30.0), rtol=1e-12)

  @x64
  def test_against_numpy(self):
    p = problem(1)
    loss, _ = jcall(sur.ppo_clip, p["logp"], p["old"], p["adv"], p["mask"],
                    eps_low=0.1, eps_high=0.3, clip_ratio_c=2.0)
    r = np.exp(np.asarray(p["logp"] - p["old"]))
    a = np.broadcast_to(np.asarray(p["adv"])[..., None], r.shape)
    lc = np.maximum(-a * r, -a * np.clip(r, 0.9, 1.3))
    want = np.where(a < 0, np.minimum(lc, -a * 2.0), lc)
    want = np.where(p["mask"], want, 0)
    np.testing.assert_allclose(loss, want, rtol=1e-12)


class SequenceGoldenTest(parameterized.TestCase):
  """GSPO, GSPO-token, LUSPO and GMPO on hand-made sequences."""

  def _gspo_inputs(self):
    # Four sequences of two tokens; log s_i is the mean of the two deltas.
    s = np.array([1.0001, 1.001, 0.999, 1.001])
    d = np.log(s)[:, None] + np.array([[0.1, -0.1], [0.05, -0.05],
                                       [0.2, -0.2], [0.0, 0.0]])
    logp = -0.5 - 0.3 * np.arange(8.0).reshape(1, 4, 2)
    old = logp - d[None]
    adv = np.array([[1.0, 1.0, -1.0, -1.0]])
    mask = np.ones((1, 4, 2), bool)
    return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), mask

  @x64
  def test_gspo(self):
    # Paper ranges 3e-4 / 4e-4: clip range [0.9997, 1.0004].
    # A=+1, s=1.0001 inside -> -1.0001; A=+1, s=1.001 -> -1.0004 (clipped);
    # A=-1, s=0.999 -> max(0.999, 0.9997) = 0.9997 (clipped);
    # A=-1, s=1.001 -> max(1.001, 1.0004) = 1.001.
    loss, m = jcall(sur.gspo, *self._gspo_inputs())
    want = np.array([-1.0001, -1.0004, 0.9997, 1.001])
    np.testing.assert_allclose(loss[0], np.repeat(want[:, None], 2, 1),
                               rtol=1e-12)
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 0.25)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 0.25)
    # seq_mean_token_mean = the mean over sequences (the paper's 1/G sum).
    d = agg.aggregate(loss, jnp.ones_like(loss, bool), "seq_mean_token_mean")
    self.assertAlmostEqual(float(d.value), want.mean(), places=12)

  @x64
  def test_gspo_token_value_equals_gspo(self):
    inputs = self._gspo_inputs()
    a, _ = jcall(sur.gspo, *inputs)
    b, _ = jcall(sur.gspo_token, *inputs)
    np.testing.assert_allclose(a, b, rtol=1e-12)

  @x64
  def test_gspo_masked_tokens_and_per_token_adv(self):
    # A sequence of 3 valid tokens and one masked (junk) token:
    # log s = (0.1 + 0.2 + 0.3) / 3 = 0.2, s = e^0.2 = 1.2214; eps 0.3 / 0.3,
    # A = 2 on every valid token: l = -2 * 1.2214.
    logp = jnp.asarray([[[-1.0, -1.0, -1.0, 50.0]]])
    old = logp - jnp.asarray([[[0.1, 0.2, 0.3, 9.0]]])
    mask = jnp.asarray([[[True, True, True, False]]])
    adv = jnp.asarray([[[2.0, 2.0, 2.0, -7.0]]])
    loss, _ = jcall(sur.gspo, logp, old, adv, mask, eps_low=0.3, eps_high=0.3)
    want = -2 * math.exp(0.2)
    np.testing.assert_allclose(loss[0, 0], [want, want, want, 0.0],
                               rtol=1e-12)

  @x64
  def test_luspo_scales_by_length(self):
    # Sequence 1: 3 valid tokens, deltas 0.1, 0.0, -0.1 -> s = 1, A = 1,
    # l = -1. Sequence 2: 1 valid token, delta log 1.1 -> s = 1.1 (inside
    # [0.8, 1.2]), A = -2 -> l = 2.2. LUSPO = mean_i(l_i |o_i|)
    # = (-1 * 3 + 2.2 * 1) / 2.
    logp = jnp.asarray([[[-1.0, -1.2, -0.7], [-0.5, 3.0, 3.0]]])
    delta = jnp.asarray([[[0.1, 0.0, -0.1], [math.log(1.1), 5.0, 5.0]]])
    mask = jnp.asarray([[[True, True, True], [True, False, False]]])
    adv = jnp.asarray([[1.0, -2.0]])
    loss, _ = jcall(sur.luspo, logp, logp - delta, adv, mask, eps_low=0.2,
                    eps_high=0.2)
    mode = sur.FIXED_AGGREGATION["luspo"]
    value = agg.aggregate(loss, mask, mode).value
    self.assertAlmostEqual(float(value), (-3.0 + 2.2) / 2, places=12)
    gspo_loss, _ = jcall(sur.gspo, logp, logp - delta, adv, mask,
                         eps_low=0.2, eps_high=0.2)
    np.testing.assert_allclose(loss, gspo_loss, rtol=1e-12)

  @x64
  def test_gmpo(self):
    # eps 0.4 / 0.4 in log space; deltas 0.5, -0.5, 0.1.
    # A = +1: d~ = min(d, clip(d)) = [0.4, -0.5, 0.1], mean 0 -> rho = 1,
    #         l = -1.
    # A = -1: d~ = max(d, clip(d)) = [0.5, -0.4, 0.1], mean 0.2/3,
    #         l = +exp(0.2/3).
    logp = jnp.asarray([[[-1.0, -2.0, -0.5], [-1.0, -2.0, -0.5]]])
    delta = jnp.asarray([[[0.5, -0.5, 0.1], [0.5, -0.5, 0.1]]])
    mask = jnp.ones((1, 2, 3), bool)
    adv = jnp.asarray([[1.0, -1.0]])
    loss, m = jcall(sur.gmpo, logp, logp - delta, adv, mask)
    np.testing.assert_allclose(loss[0, 0], [-1.0] * 3, rtol=1e-12)
    np.testing.assert_allclose(loss[0, 1], [math.exp(0.2 / 3)] * 3,
                               rtol=1e-12)
    # clipped: A>0 with d > 0.4 (1 token), A<0 with d < -0.4 (1 token).
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 1 / 6)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 1 / 6)
    # The fixed aggregation is the plain mean over sequences.
    value = agg.aggregate(loss, mask, sur.FIXED_AGGREGATION["gmpo"]).value
    self.assertAlmostEqual(float(value), (-1 + math.exp(0.2 / 3)) / 2,
                           places=12)


class TokenGoldenTest(parameterized.TestCase):
  """CISPO, SAPO, REINFORCE, VESPO."""

  @x64
  def test_cispo_verl(self):
    # w = clip(r, 0.8, 1.2): r = 1.5 -> 1.2, r = 0.5 -> 0.8, r = 1.1 -> 1.1.
    logp, old, adv, mask = tokens([1.5, 0.5, 1.1], [1, 1, -1])
    loss, m = jcall(sur.cispo, logp, old, adv, mask, convention="verl")
    w = np.array([1.2, 0.8, 1.1])
    np.testing.assert_allclose(
        loss[0, 0], -w * np.array([1, 1, -1]) * np.asarray(logp[0, 0]),
        rtol=1e-12)
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 1 / 3)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 1 / 3)
    self.assertAlmostEqual(metric(m, "is_weight_mean"), 3.1 / 3, places=12)

  @x64
  def test_cispo_trl(self):
    # w = min(r, 5): r = 6 -> 5, r = 0.5 -> 0.5 (no lower bound), 1.1 -> 1.1.
    logp, old, adv, mask = tokens([6.0, 0.5, 1.1], [1, 1, -1])
    loss, m = jcall(sur.cispo, logp, old, adv, mask, convention="trl")
    w = np.array([5.0, 0.5, 1.1])
    np.testing.assert_allclose(
        loss[0, 0], -w * np.array([1, 1, -1]) * np.asarray(logp[0, 0]),
        rtol=1e-12)
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 1 / 3)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 0.0)
    # The same inputs under verl's relative bounds give different weights.
    loss_verl, _ = jcall(sur.cispo, logp, old, adv, mask, convention="verl")
    self.assertFalse(np.allclose(loss, loss_verl))

  @x64
  def test_sapo(self):
    # f(r) = sigmoid(tau (r - 1)) 4 / tau; tau = 1 for A > 0, 1.05 else.
    # r = 1: f = 0.5 * 4 / tau -> A=+1: -2; A=-1: +2 / 1.05.
    # r = 1.5, A = +1: -4 sigmoid(0.5); r = 0.5, A = -1:
    # +4 / 1.05 * sigmoid(-0.525).
    def sig(x):
      return 1 / (1 + math.exp(-x))

    logp, old, adv, mask = tokens([1.0, 1.0, 1.5, 0.5], [1, -1, 1, -1])
    loss, _ = jcall(sur.sapo, logp, old, adv, mask)
    want = [-2.0, 2 / 1.05, -4 * sig(0.5), 4 / 1.05 * sig(-0.525)]
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)

  @x64
  def test_reinforce(self):
    # -A logp: logp -0.5, A 2 -> 1.0; logp -2, A -1 -> -2.
    logp = jnp.asarray([[[-0.5, -2.0]]])
    adv = jnp.asarray([[[2.0, -1.0]]])
    mask = jnp.ones((1, 1, 2), bool)
    loss, _ = jcall(sur.reinforce, logp, None, adv, mask)
    np.testing.assert_allclose(loss[0, 0], [1.0, -2.0], rtol=1e-12)
    # Bypass mode: r = pi / pi_rollout = 3 and 0.5; w = min(r, 2) = 2, 0.5.
    old = logp - jnp.log(jnp.asarray([[[3.0, 0.5]]]))
    loss, m = jcall(sur.reinforce, logp, old, adv, mask, is_threshold=2.0)
    np.testing.assert_allclose(loss[0, 0], [2.0, -1.0], rtol=1e-12)
    self.assertAlmostEqual(metric(m, "is_truncfrac"), 0.5)
    self.assertAlmostEqual(metric(m, "is_weight_mean"), 1.25, places=12)

  @x64
  def test_vespo(self):
    # phi(W) = e^lam W^k e^(-lam W), W = exp(sum_t delta_t).
    # Seq 1: deltas +-0.3 -> W = 1 -> phi = 1 (any k, lam).
    # Seq 2: A > 0, W = 2 -> e^3 * 2^2 * e^-6 = 4 e^-3.
    # Seq 3: A < 0, W = 2 -> e^2 * 2^3 * e^-4 = 8 e^-2.
    logp = jnp.asarray([[[-1.0, -2.0], [-0.5, -1.5], [-0.7, -0.2]]])
    half = math.log(2) / 2
    delta = jnp.asarray([[[0.3, -0.3], [half, half], [half, half]]])
    adv = jnp.asarray([[1.5, 1.5, -1.5]])
    mask = jnp.ones((1, 3, 2), bool)
    loss, _ = jcall(sur.vespo, logp, logp - delta, adv, mask)
    phi = np.array([1.0, 4 * math.exp(-3), 8 * math.exp(-2)])[:, None]
    want = -phi * np.asarray(adv[0])[:, None] * np.asarray(logp[0])
    np.testing.assert_allclose(loss[0], want, rtol=1e-12)

  @x64
  def test_vespo_against_numpy(self):
    p = problem(2)
    loss, _ = jcall(sur.vespo, p["logp"], p["old"], p["adv"], p["mask"],
                    k_pos=1.5, lambda_pos=2.5, k_neg=2.5, lambda_neg=1.5)
    m = np.asarray(p["mask"])
    d = np.where(m, np.asarray(p["logp"] - p["old"]), 0)
    log_w = np.clip(d.sum(-1), math.log(1e-8), 20)[..., None]
    a = np.broadcast_to(np.asarray(p["adv"])[..., None], d.shape)
    k = np.where(a >= 0, 1.5, 2.5)
    lam = np.where(a >= 0, 2.5, 1.5)
    phi = np.exp(lam + k * log_w - lam * np.exp(log_w))
    want = np.where(m, -phi * a * np.asarray(p["logp"]), 0)
    np.testing.assert_allclose(loss, want, rtol=1e-12)


class CovGoldenTest(parameterized.TestCase):
  """Clip-Cov and KL-Cov on a batch with known covariances."""

  # A = [2, 2, -2, -2, 0, 0]; logp = [-0.2, -0.4, -3, -2.8, -1, -1]:
  # mean A = 0, mean logp = -1.4, cov = A (logp + 1.4)
  #   = [2.4, 2.0, 3.2, 2.8, 0, 0]: the first four are in (1, 5).
  # Ratios [1, 1.5, 1.2, 0.9, 1, 1]: token 1 (A = 2, r = 1.5) is clipped by
  # PPO, so the Clip-Cov candidates are tokens 0, 2, 3.
  LOGP = [-0.2, -0.4, -3.0, -2.8, -1.0, -1.0]
  RATIOS = [1.0, 1.5, 1.2, 0.9, 1.0, 1.0]
  ADV = [2.0, 2.0, -2.0, -2.0, 0.0, 0.0]
  # PPO losses: [-2, -2 * 1.2, 2 * 1.2, 2 * 0.9, 0, 0].
  PPO = np.array([-2.0, -2.4, 2.4, 1.8, 0.0, 0.0])

  @x64
  def test_clip_cov_detaches_all_candidates_when_k_is_large(self):
    logp, old, adv, mask = tokens(self.RATIOS, self.ADV, self.LOGP)
    loss, m = jcall(sur.clip_cov, logp, old, adv, mask,
                    key=jax.random.key(0), clip_cov_ratio=1.0)
    want = self.PPO.copy()
    want[[0, 2, 3]] = 0
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)
    self.assertAlmostEqual(metric(m, "covfrac"), 3 / 6)

  @x64
  def test_clip_cov_default_detaches_one_random_candidate(self):
    # k = max(floor(2e-4 * 6), 1) = 1: exactly one of tokens 0, 2, 3.
    logp, old, adv, mask = tokens(self.RATIOS, self.ADV, self.LOGP)
    chosen = set()
    for seed in range(20):
      loss, _ = jcall(sur.clip_cov, logp, old, adv, mask,
                      key=jax.random.key(seed))
      zeroed = np.flatnonzero(~np.isclose(loss[0, 0], self.PPO))
      self.assertLen(zeroed, 1)
      self.assertIn(int(zeroed[0]), (0, 2, 3))
      chosen.add(int(zeroed[0]))
    self.assertGreater(len(chosen), 1)  # the key matters

  @x64
  def test_clip_cov_is_deterministic_given_the_key(self):
    p = problem(4)
    kw = dict(key=jax.random.key(7), clip_cov_ratio=0.1, clip_cov_lb=0.0)
    a, ma = jcall(sur.clip_cov, p["logp"], p["old"], p["adv"], p["mask"], **kw)
    b, mb = jcall(sur.clip_cov, p["logp"], p["old"], p["adv"], p["mask"], **kw)
    np.testing.assert_array_equal(a, b)
    self.assertGreater(metric(ma, "covfrac"), 0)
    self.assertEqual(metric(ma, "covfrac"), metric(mb, "covfrac"))

  @x64
  def test_kl_cov(self):
    logp, old, adv, mask = tokens(self.RATIOS, self.ADV, self.LOGP)
    # No PPO clip: -A r = [-2, -3, 2.4, 1.8, 0, 0].
    base = np.array([-2.0, -3.0, 2.4, 1.8, 0.0, 0.0])
    # k = 1: the largest cov is token 2 (3.2): + 0.1 |log 1.2|.
    loss, m = jcall(sur.kl_cov, logp, old, adv, mask)
    want = base.copy()
    want[2] += 0.1 * math.log(1.2)
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)
    self.assertAlmostEqual(metric(m, "covfrac"), 1 / 6)
    # k = floor(0.5 * 6) = 3: tokens 2 (3.2), 3 (2.8), 0 (2.4); token 0 has
    # delta 0, token 3 gets + 0.1 |log 0.9|.
    loss, _ = jcall(sur.kl_cov, logp, old, adv, mask, kl_cov_ratio=0.5)
    want[3] += 0.1 * abs(math.log(0.9))
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)

  @x64
  def test_covariance_ignores_masked_tokens(self):
    # Appending masked junk tokens changes neither means nor selection.
    logp, old, adv, mask = tokens(self.RATIOS, self.ADV, self.LOGP)
    pad = lambda x, v: jnp.concatenate([x, jnp.full((1, 1, 3), v)], -1)
    big = (pad(logp, 40.0), pad(old, -40.0), pad(adv, 99.0),
           pad(mask, False))
    for fn, kw in ((sur.kl_cov, {}),
                   (sur.clip_cov, dict(key=jax.random.key(1, impl="rbg")))):
      a, _ = jcall(fn, logp, old, adv, mask, **kw)
      b, _ = jcall(fn, *big, **kw)
      np.testing.assert_allclose(b[..., :6], a, rtol=1e-12)
      np.testing.assert_array_equal(b[..., 6:], 0)


def np_entropy_scale(ent, mask, pivot, neg_scale, eps=1e-8):
  """HAPO's compute_entropy_h in plain numpy (Python round: ties to even)."""
  ent, mask = np.asarray(ent), np.asarray(mask)
  logh = np.log(np.maximum(ent[mask], eps))
  c = np.sort(logh)[round(pivot * (logh.size - 1))]
  h = logh - c
  h = h / np.sqrt(max(np.mean(h * h), eps))
  pos_max = max(h[h > 0].max(initial=0.0), eps)
  neg_min = min(h[h < 0].min(initial=0.0), -eps)
  scale_neg = 1 / abs(neg_min) if neg_scale == "described" else 1 / neg_min
  out = np.zeros(ent.shape)
  out[mask] = np.where(h > 0, h / pos_max, h * scale_neg)
  return out, c


class HapoGoldenTest(parameterized.TestCase):

  @x64
  def test_entropy_scale_by_hand(self):
    # log H = [-2, -1, 0, 1, 2] (+ a masked token); pivot 0.8: index
    # round(0.8 * 4) = 3 -> c = 1; h = [-3, -2, -1, 0, 1] / sqrt(15 / 5);
    # described: h / 3 for h <= 0, h / 1 for h > 0 (in units of sqrt 3).
    ent = jnp.exp(jnp.asarray([[[-2.0, -1.0, 0.0, 1.0, 2.0, 9.0]]]))
    mask = jnp.asarray([[[True] * 5 + [False]]])
    h, stats = jcall(sur.hapo_entropy_scale, ent, mask, return_stats=True)
    np.testing.assert_allclose(h[0, 0], [-1, -2 / 3, -1 / 3, 0, 1, 0],
                               atol=1e-12)
    self.assertAlmostEqual(float(stats.pivot_value), 1.0, places=12)
    self.assertAlmostEqual(float(stats.std), math.sqrt(3), places=12)
    # The released code divides by min(h-) < 0: every value is >= 0 and the
    # lowest-entropy token gets 1.
    h = jcall(sur.hapo_entropy_scale, ent, mask, neg_scale="code")
    np.testing.assert_allclose(h[0, 0], [1, 2 / 3, 1 / 3, 0, 1, 0],
                               atol=1e-12)

  @parameterized.product(neg_scale=("described", "code"),
                         pivot=(0.8, 0.5, 0.0, 1.0))
  @x64
  def test_entropy_scale_against_numpy(self, neg_scale, pivot):
    p = problem(5, b=3, g=4, t=6)
    # pivot traced (one compilation per neg_scale).
    h = jcall(sur.hapo_entropy_scale, p["ent"], p["mask"],
              pivot=jnp.asarray(pivot), neg_scale=neg_scale)
    want, c = np_entropy_scale(p["ent"], p["mask"], pivot, neg_scale)
    np.testing.assert_allclose(h, want, rtol=1e-12, atol=1e-12)
    # numpy's "nearest" quantile (torch's too) agrees with the index rule.
    logh = np.log(np.asarray(p["ent"])[np.asarray(p["mask"])])
    self.assertEqual(c, np.quantile(logh, pivot, method="nearest"))
    # Range: [-1, 1] as described (pivot 0 leaves no negative values, pivot
    # 1 no positive ones); the released code maps everything into [0, 1].
    lo, hi = float(jnp.min(h)), float(jnp.max(h))
    if neg_scale == "described":
      self.assertAlmostEqual(lo, -1.0 if pivot > 0 else 0.0)
      self.assertAlmostEqual(hi, 1.0 if pivot < 1 else 0.0)
    else:
      self.assertAlmostEqual(lo, 0.0)
      self.assertAlmostEqual(hi, 1.0)

  def _inputs(self):
    # (h^, A, r) per token; eps 0.2 / 0.2, alpha = beta = 1, c = 10.
    h_hat = [0.5, 0.5, 0.5, -0.5, -0.5, -0.5, 0.0]
    adv = [1, 1, 1, -1, -1, -1, -1]
    ratios = [1.05, 1.25, 1.4, 0.95, 0.75, 0.6, 12.0]
    logp, old, adv, mask = tokens(ratios, adv)
    return logp, old, adv, mask, jnp.asarray(h_hat)[None, None]

  @x64
  def test_hapo_clip_full(self):
    logp, old, adv, mask, h_hat = self._inputs()
    loss, m = jcall(sur.hapo_clip, logp, old, adv, mask, h_hat_BxGxT=h_hat)
    # h^ = 0.5: eps_high -> 0.3, zone (0.9, 1.15), bounds [0.8, 1.3];
    #   r 1.05 inside -> A = 1: -1.05; r 1.25 outside -> A_ent = 1.5:
    #   -1.875; r 1.4 -> A_ent 1.5, clipped at 1.3: -1.95.
    # h^ = -0.5: eps_low -> 0.3, zone (0.85, 1.1), bounds [0.7, 1.2];
    #   r 0.95 inside -> A_ent = -0.5: 0.475; r 0.75 outside -> A = -1:
    #   0.75; r 0.6 -> clipped at 0.7: 0.7.
    # h^ = 0, A = -1, r = 12: outside the zone, A = -1, max(12, 1.2) = 12,
    #   dual clip -> 10.
    want = [-1.05, -1.875, -1.95, 0.475, 0.75, 0.7, 10.0]
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)
    self.assertAlmostEqual(metric(m, "clipfrac_high"), 1 / 7)
    self.assertAlmostEqual(metric(m, "clipfrac_low"), 1 / 7)
    self.assertAlmostEqual(metric(m, "dual_clipfrac"), 1 / 7)
    self.assertAlmostEqual(metric(m, "adv_ent_frac"), 3 / 7)

  @parameterized.named_parameters(
      # Plain PPO with c = 10.
      ("neither", False, False, [-1.05, -1.2, -1.2, 0.95, 0.8, 0.8, 10.0]),
      # Adaptive bounds only: [0.8, 1.3] for h^ > 0, [0.7, 1.2] for h^ < 0.
      ("adaptive_clip", True, False,
       [-1.05, -1.25, -1.3, 0.95, 0.75, 0.7, 10.0]),
      # Redistribution only: zone (0.9, 1.1) everywhere, bounds [0.8, 1.2];
      # r 1.25 -> A_ent 1.5 * 1.2 = -1.8; r 0.95 -> A_ent -0.5: 0.475.
      ("redistribute", False, True,
       [-1.05, -1.8, -1.8, 0.475, 0.8, 0.8, 10.0]),
  )
  @x64
  def test_hapo_clip_options(self, adaptive_clip, redistribute, want):
    logp, old, adv, mask, h_hat = self._inputs()
    loss, _ = jcall(sur.hapo_clip, logp, old, adv, mask, h_hat_BxGxT=h_hat,
                    adaptive_clip=adaptive_clip,
                    redistribute_adv=redistribute)
    np.testing.assert_allclose(loss[0, 0], want, rtol=1e-12)

  @x64
  def test_hapo_clip_scales(self):
    # alpha = 2, beta = 0.5 at h^ = 0.5, r = 1.25, A = 1: eps_high
    # 0.2 * 2 = 0.4, zone (0.9, 1.2) -> outside, A_ent = 1.25: -1.5625.
    logp, old, adv, mask = tokens([1.25], [1.0])
    loss, _ = jcall(sur.hapo_clip, logp, old, adv, mask,
                    h_hat_BxGxT=jnp.full((1, 1, 1), 0.5), clip_alpha=2.0,
                    adv_beta=0.5)
    np.testing.assert_allclose(loss[0, 0], [-1.5625], rtol=1e-12)

  @parameterized.parameters("described", "code")
  @x64
  def test_entropy_input_equals_precomputed_h_hat(self, neg_scale):
    p = problem(6)
    a, _ = jcall(sur.hapo_clip, p["logp"], p["old"], p["adv"], p["mask"],
                 entropy_BxGxT=p["ent"], neg_scale=neg_scale)
    h = jcall(sur.hapo_entropy_scale, p["ent"], p["mask"], neg_scale=neg_scale)
    b, _ = jcall(sur.hapo_clip, p["logp"], p["old"], p["adv"], p["mask"],
                 h_hat_BxGxT=h)
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ---------------------------------------------------------------------------
# Gradients.


def fd_grad(f, x, *args, h=1e-6):
  """Central finite differences of a scalar ``f(x, *args)``, per coordinate."""
  flat = np.asarray(x).reshape(-1)
  out = np.zeros_like(flat)
  for i in range(flat.size):
    e = np.zeros_like(flat)
    e[i] = h
    plus = float(f(jnp.asarray((flat + e).reshape(x.shape)), *args))
    minus = float(f(jnp.asarray((flat - e).reshape(x.shape)), *args))
    out[i] = (plus - minus) / (2 * h)
  return out.reshape(x.shape)


_FN_CACHE = {}


def objective(name, kw, mode=None):
  """Jitted value and gradient of ``logp -> aggregate(loss).value`` (cached).

  The returned function takes ``(logp, q)``, ``q`` a dict from ``problem``
  (traced, so tests with equal shapes share one compilation); ``mode``
  defaults to the surrogate's fixed aggregation, else ``token_mean``.
  """
  mode = mode or mode_of(name)
  key = (name, tuple(sorted(kw.items())), mode)
  if key not in _FN_CACHE:

    def f(logp, q):
      loss, _ = call(name, kw, q, logp=logp)
      return agg.aggregate(loss, q["mask"], mode).value

    _FN_CACHE[key] = jax.jit(jax.value_and_grad(f))
  return _FN_CACHE[key]


def grad_problem(scale=0.6):
  """``problem(0)`` with per-token advantages (constant along a sequence).

  The shape matches the masked-token tests, so the jitted value-and-grad
  functions are shared with them.
  """
  p = problem(0, scale=scale)
  return dict(p, adv=jnp.broadcast_to(p["adv"][..., None], p["mask"].shape))


def grad(vg, p):
  """The gradient part of a jitted value-and-grad ``objective``."""
  return vg(p["logp"], p)[1]


class GradientTest(parameterized.TestCase):

  # Surrogates without stop-gradients: jax.grad equals the finite
  # differences of the value itself.
  @parameterized.named_parameters(
      (c[0], c[1], c[2]) for c in CASES
      if c[0] in ("ppo_clip", "ppo_clip_dual", "ppo_clip_delta", "gspo",
                  "sapo", "gmpo", "reinforce", "clip_cov", "kl_cov", "luspo",
                  "hapo_clip", "hapo_clip_code"))
  @x64
  def test_grad_matches_finite_differences(self, name, kw):
    p = grad_problem()
    vg = objective(name, kw)
    _, g = vg(p["logp"], p)
    self.assertGreater(float(jnp.max(jnp.abs(g))), 1e-3)  # not vacuous
    fd = fd_grad(lambda x, q: vg(x, q)[0], p["logp"], p)
    np.testing.assert_allclose(g, fd, atol=1e-7)

  @x64
  def test_dual_clip_and_delta_are_exercised(self):
    # The gradient problem reaches the dual clip and the delta cap, so the
    # finite-difference tests of "ppo_clip_dual" and "ppo_clip_delta" cover
    # both.
    p = problem(0)
    args = (p["logp"], p["old"], p["adv"], p["mask"])
    _, m = jcall(sur.ppo_clip, *args, eps_high=0.28, clip_ratio_c=2.0)
    self.assertGreater(metric(m, "dual_clipfrac"), 0)
    a, _ = jcall(sur.ppo_clip, *args, delta=1.5)
    b, _ = jcall(sur.ppo_clip, *args)
    self.assertFalse(np.allclose(a, b))

  @parameterized.parameters(("verl", {}), ("trl", dict(eps_max=1.5)))
  @x64
  def test_cispo_gradient_holds_the_weight_constant(self, convention, kw):
    p = grad_problem()
    loss, m = jcall(sur.cispo, p["logp"], p["old"], p["adv"], p["mask"],
                    convention=convention, **kw)
    r = np.exp(np.asarray(p["logp"] - p["old"]))
    w = np.clip(r, 0.8, 1.2) if convention == "verl" else np.minimum(r, 1.5)
    self.assertGreater(metric(m, "clipfrac_high"), 0)
    a = np.asarray(p["adv"])
    mask = np.asarray(p["mask"])
    n = mask.sum()

    def frozen(logp):  # -w A logp with w a constant
      return jnp.sum(jnp.where(mask, -w * a * logp, 0)) / n

    g = grad(objective("cispo", dict(convention=convention, **kw)), p)
    want = np.where(mask, -w * a, 0) / n  # the analytic gradient
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, fd_grad(jax.jit(frozen), p["logp"]),
                               atol=1e-7)

  @x64
  def test_vespo_gradient_holds_phi_constant(self):
    p = grad_problem()
    mask = np.asarray(p["mask"])
    d = np.where(mask, np.asarray(p["logp"] - p["old"]), 0)
    log_w = np.clip(d.sum(-1), math.log(1e-8), 20)[..., None]
    a = np.asarray(p["adv"])
    k, lam = np.where(a >= 0, 2.0, 3.0), np.where(a >= 0, 3.0, 2.0)
    phi = np.exp(lam + k * log_w - lam * np.exp(log_w))
    n = mask.sum()
    g = grad(objective("vespo", {}), p)
    np.testing.assert_allclose(g, np.where(mask, -phi * a, 0) / n,
                               rtol=1e-12, atol=1e-15)
    frozen = lambda x: jnp.sum(jnp.where(mask, -phi * a * x, 0)) / n
    np.testing.assert_allclose(g, fd_grad(jax.jit(frozen), p["logp"]),
                               atol=1e-7)

  @x64
  def test_reinforce_bypass_gradient_holds_the_weight_constant(self):
    p = grad_problem()
    mask = np.asarray(p["mask"])
    w = np.minimum(np.exp(np.asarray(p["logp"] - p["old"])), 1.5)
    a = np.asarray(p["adv"])
    g = grad(objective("reinforce", dict(is_threshold=1.5)), p)
    np.testing.assert_allclose(g, np.where(mask, -w * a, 0) / mask.sum(),
                               rtol=1e-12, atol=1e-15)

  @x64
  def test_gspo_token_gradient_matches_frozen_form(self):
    p = grad_problem()
    mask = np.asarray(p["mask"])
    x0 = np.asarray(p["logp"])
    d = np.where(mask, x0 - np.asarray(p["old"]), 0)
    log_s = (d.sum(-1) / np.maximum(mask.sum(-1), 1))[..., None]
    a = np.asarray(p["adv"])

    def frozen(x):  # s_it = s_i(theta_0) * exp(logp - logp_0)
      r = jnp.exp(log_s + x - x0)
      loss = jnp.maximum(-a * r, -a * jnp.clip(r, 0.8, 1.2))
      return agg.aggregate(jnp.where(mask, loss, 0), p["mask"],
                           "seq_mean_token_mean").value

    kw = dict(eps_low=0.2, eps_high=0.2)
    g = grad(objective("gspo_token", kw), p)
    self.assertGreater(float(jnp.max(jnp.abs(g))), 1e-3)
    np.testing.assert_allclose(g, fd_grad(jax.jit(frozen), p["logp"]),
                               atol=1e-7)

  @parameterized.parameters(0.2, 3e-4)
  @x64
  def test_gspo_token_equals_gspo_with_constant_token_advantages(self, eps):
    # Per-token advantages equal to the sequence's A_i.
    p = grad_problem(scale=0.1)
    kw = dict(eps_low=eps, eps_high=eps)
    va, ga = objective("gspo", kw)(p["logp"], p)
    vb, gb = objective("gspo_token", kw)(p["logp"], p)
    self.assertAlmostEqual(float(va), float(vb), places=12)
    np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-14)
    if eps == 0.2:
      self.assertGreater(float(jnp.max(jnp.abs(ga))), 1e-3)

  @x64
  def test_metrics_carry_no_gradient(self):
    p = problem(0)

    def f(logp):
      _, m = sur.ppo_clip(logp, p["old"], p["adv"], p["mask"])
      return sum(v.total for v in m.values())

    np.testing.assert_array_equal(jax.jit(jax.grad(f))(p["logp"]), 0)


# ---------------------------------------------------------------------------
# Shared invariants over every surrogate.


def with_junk(p):
  """``p`` with per-token advantages, and a copy with junk at masked tokens.

  The junk (-inf log-probs, NaN old log-probs and advantages, huge
  entropies) must change neither values nor gradients.
  """
  mask = p["mask"]
  adv_t = jnp.broadcast_to(p["adv"][..., None], mask.shape)
  base = dict(p, adv=adv_t)
  junk = dict(base, logp=jnp.where(mask, p["logp"], -jnp.inf),
              old=jnp.where(mask, p["old"], jnp.nan),
              adv=jnp.where(mask, adv_t, jnp.nan),
              ent=jnp.where(mask, p["ent"], 1e6))
  return base, junk


class InvariantTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  @x64
  def test_masked_tokens_contribute_nothing(self, name, kw):
    p = problem(0)
    mask = p["mask"]
    base, junk = with_junk(p)
    mode = mode_of(name)

    def value_grad(q):
      return objective(name, kw, mode)(q["logp"], q)

    v0, g0 = value_grad(base)
    v1, g1 = value_grad(junk)
    self.assertTrue(np.isfinite(float(v1)))
    self.assertAlmostEqual(float(v0), float(v1), places=12)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(g1)[~np.asarray(mask)], 0)

  # One case per surrogate (eager dispatch is slow to compile), on float32
  # inputs with junk at the masked tokens: jit equals eager, the loss is 0 at
  # masked tokens and every metric is finite.
  @parameterized.named_parameters(
      *[c for i, c in enumerate(CASES) if c[1] not in
        {d[1] for d in CASES[:i]}])
  def test_jit_equals_eager(self, name, kw):
    _, p = with_junk(problem(0))
    p = {k: v.astype(jnp.float32) if v.dtype == jnp.float64 else v
         for k, v in p.items()}
    f = sur.SURROGATES[name]
    ex = extra(name, p)
    args = (p["logp"], p["old"], p["adv"], p["mask"])
    loss, m = f(*args, **kw, **ex)
    jitted = jax.jit(lambda *a, **e: f(*a, **kw, **e))
    loss_j, m_j = jitted(*args, **ex)
    self.assertEqual(loss.dtype, jnp.float32)
    self.assertEqual(loss.shape, p["mask"].shape)
    np.testing.assert_allclose(loss_j, loss, rtol=1e-6, atol=1e-7)
    self.assertTrue(np.all(np.isfinite(loss)))
    np.testing.assert_array_equal(np.asarray(loss)[~np.asarray(p["mask"])],
                                  0)
    self.assertEqual(set(m), set(m_j))
    for k in m:
      self.assertIsInstance(m[k], agg.Deferred)
      self.assertTrue(np.isfinite(float(m[k].value)), k)
      np.testing.assert_allclose(m_j[k].value, m[k].value, rtol=1e-6,
                                 atol=1e-7, err_msg=k)

  @parameterized.named_parameters(*CASES)
  def test_bad_inputs_name_the_argument(self, name, kw):
    p = problem(0)
    p = {k: v.astype(jnp.float32) if v.dtype == jnp.float64 else v
         for k, v in p.items()}
    f = sur.SURROGATES[name]
    ex = extra(name, p)
    logp, old, adv, mask = p["logp"], p["old"], p["adv"], p["mask"]
    with self.assertRaisesRegex(ValueError, "logp_BxGxT must have"):
      f(logp[..., :-1], old, adv, mask, **kw, **ex)
    with self.assertRaisesRegex(ValueError, "old_logp_BxGxT must have"):
      f(logp, old[:1], adv, mask, **kw, **ex)
    with self.assertRaisesRegex(ValueError, "adv_BxG must have"):
      f(logp, old, adv[:, :1], mask, **kw, **ex)
    with self.assertRaisesRegex(ValueError, "adv must be adv_BxG"):
      f(logp, old, adv[0], mask, **kw, **ex)
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      f(logp, old, adv, mask.astype(jnp.float32), **kw, **ex)
    with self.assertRaisesRegex(TypeError, "logp_BxGxT must be a floating"):
      f(logp.astype(jnp.int32), old, adv, mask, **kw, **ex)
    with self.assertRaisesRegex(ValueError, f"{name}: "):
      f(logp, old, adv, mask[0], **kw, **ex)


class ArgumentErrorTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    p = problem(0)
    self.args = tuple(p[k].astype(jnp.float32) if k != "mask" else p[k]
                      for k in ("logp", "old", "adv", "mask"))
    self.ent = p["ent"].astype(jnp.float32)

  def test_cispo_parameters_belong_to_one_convention(self):
    with self.assertRaisesRegex(ValueError, "convention must be one of"):
      sur.cispo(*self.args, convention="minimax")
    with self.assertRaisesRegex(ValueError, "eps_max is TRL's absolute cap"):
      sur.cispo(*self.args, convention="verl", eps_max=5.0)
    with self.assertRaisesRegex(ValueError, "eps_low / eps_high are verl's"):
      sur.cispo(*self.args, convention="trl", eps_high=0.28)
    with self.assertRaisesRegex(ValueError, "eps_max must be > 0"):
      sur.cispo(*self.args, convention="trl", eps_max=0.0)

  def test_hyperparameters(self):
    with self.assertRaisesRegex(ValueError, "clip_ratio_c must be > 1"):
      sur.ppo_clip(*self.args, clip_ratio_c=1.0)
    with self.assertRaisesRegex(ValueError, "eps_low must be >= 0"):
      sur.ppo_clip(*self.args, eps_low=-0.1)
    with self.assertRaisesRegex(ValueError, "tau_neg must be > 0"):
      sur.sapo(*self.args, tau_neg=0.0)
    with self.assertRaisesRegex(ValueError, "clip_cov: key is required"):
      sur.clip_cov(*self.args)
    with self.assertRaisesRegex(ValueError, "is_threshold needs old_logp"):
      sur.reinforce(self.args[0], None, *self.args[2:], is_threshold=2.0)
    with self.assertRaisesRegex(ValueError, "hapo_clip: clip_ratio_c"):
      sur.hapo_clip(*self.args, entropy_BxGxT=self.ent, clip_ratio_c=0.5)

  def test_hapo_inputs(self):
    with self.assertRaisesRegex(ValueError, "exactly one of entropy_BxGxT"):
      sur.hapo_clip(*self.args)
    with self.assertRaisesRegex(ValueError, "exactly one of entropy_BxGxT"):
      sur.hapo_clip(*self.args, entropy_BxGxT=self.ent,
                    h_hat_BxGxT=self.ent)
    with self.assertRaisesRegex(ValueError, "entropy_BxGxT must have"):
      sur.hapo_clip(*self.args, entropy_BxGxT=self.ent[..., 1:])
    with self.assertRaisesRegex(ValueError, "h_hat_BxGxT must have"):
      sur.hapo_clip(*self.args, h_hat_BxGxT=self.ent[0])
    with self.assertRaisesRegex(ValueError, "neg_scale must be one of"):
      sur.hapo_entropy_scale(self.ent, self.args[3], neg_scale="abs")
    with self.assertRaisesRegex(ValueError, "pivot must be in"):
      sur.hapo_entropy_scale(self.ent, self.args[3], pivot=1.5)
    with self.assertRaisesRegex(ValueError, "hapo_entropy_scale: entropy"):
      sur.hapo_entropy_scale(self.ent[0], self.args[3])

  @parameterized.named_parameters(
      ("ppo_clip", "ppo_clip", dict(eps_high=0.28, clip_ratio_c=3.0,
                                    delta=2.0)),
      ("gspo", "gspo", dict(eps_low=0.1, eps_high=0.2)),
      ("sapo", "sapo", dict(tau_pos=0.9, tau_neg=1.1)),
      ("gmpo", "gmpo", dict(eps_low=0.3, eps_high=0.5)),
      ("kl_cov", "kl_cov", dict(kl_cov_ratio=0.2, ppo_kl_coef=0.3)),
      ("vespo", "vespo", dict(k_pos=1.5, lambda_pos=2.0)),
      ("hapo_clip", "hapo_clip", dict(clip_alpha=0.5, adv_beta=2.0,
                                      pivot=0.6)),
  )
  def test_traced_hyperparameters(self, name, kw):
    # Schedules: numeric hyperparameters may arrive as traced arrays.
    f = sur.SURROGATES[name]
    ex = {"entropy_BxGxT": self.ent} if name == "hapo_clip" else {}
    traced = {k: jnp.asarray(v, jnp.float32) for k, v in kw.items()}
    a, _ = jcall(f, *self.args, **traced, **ex)
    b, _ = jcall(f, *self.args, **kw, **ex)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class RegistryTest(parameterized.TestCase):

  def test_surrogates(self):
    self.assertEqual(
        set(sur.SURROGATES),
        {"ppo_clip", "gspo", "gspo_token", "cispo", "sapo", "gmpo",
         "reinforce", "clip_cov", "kl_cov", "vespo", "luspo", "hapo_clip"})
    for name in sur.SURROGATES:
      self.assertIn(name, {c[1] for c in CASES})

  def test_fixed_aggregation(self):
    self.assertEqual(sur.FIXED_AGGREGATION["gmpo"], "seq_mean_token_mean")
    self.assertEqual(sur.FIXED_AGGREGATION["luspo"], "seq_mean_token_sum")
    for name, mode in sur.FIXED_AGGREGATION.items():
      self.assertIn(name, sur.SURROGATES)
      self.assertIn(mode, agg.AGGREGATIONS)


if __name__ == "__main__":
  absltest.main()
