"""Tests of the token-level estimators in ``jaxrl_group/advantages/_token.py``.

The golden values come from plain numpy reference implementations written
here, independently of the library: per-row Python loops that follow verl
(``reinforce_plus_plus``, ``reinforce_plus_plus_baseline``,
``optimal_token_baseline``, ``gae``, ``masked_whiten``) as stated in
``reference/estimators.md`` sections 1.4, 1.5, 1.10 and 1.14.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _token

B, G, T = 4, 3, 7
ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline",
              "optimal_token_baseline", "gae")
F32_TOL = dict(rtol=1e-5, atol=2e-5)


# ----------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------


def _inputs(seed, *, gaps=False, masked=True):
  """Random float32 inputs with ragged (or gappy) token masks.

  Args:
    seed: numpy seed.
    gaps: interior gaps in the token masks (multi-turn style) instead of
      prefix masks.
    masked: mask out one sample and make row 3 a singleton group.

  Returns:
    A dict of numpy arrays.
  """
  rng = np.random.default_rng(seed)
  if gaps:
    tm = rng.random((B, G, T)) < 0.6
    tm[0, 0] = [1, 0, 1, 1, 0, 0, 1]  # valid, invalid, valid
    tm[0, 1] = [0, 0, 1, 1, 0, 1, 0]  # leading and trailing invalid
    tm[1, 0] = [1, 0, 0, 0, 0, 0, 1]  # one long gap
    tm[1, 1] = [0, 0, 0, 1, 0, 0, 0]  # a single valid token
  else:
    lengths = rng.integers(2, T + 1, size=(B, G))
    lengths[0, 0] = 1  # a row of length 1
    lengths[0, 1] = 0  # an empty row
    lengths[1, 0] = T  # a full row
    tm = np.arange(T)[None, None, :] < lengths[..., None]
  tm[2, 2] = False  # an empty row
  mask = np.ones((B, G), bool)
  if masked:
    mask[1, 2] = False  # a masked sample in a group of three
    mask[3, 1:] = False  # a singleton group
  pi = rng.uniform(0.05, 0.95, size=(B, G, T))
  # sum_v pi_v^2 lies in [pi^2, pi^2 + (1 - pi)^2].
  sum_pi_sq = pi**2 + rng.uniform(0.0, 1.0, size=pi.shape) * (1 - pi)**2
  f32 = lambda x: np.asarray(x, np.float32)
  return dict(
      rewards=f32(rng.normal(size=(B, G))),
      mask=mask,
      tm=np.asarray(tm, bool),
      values=f32(rng.normal(size=(B, G, T))),
      kl=f32(0.5 * rng.normal(size=(B, G, T))),
      old_logp=f32(np.log(pi)),
      sum_pi_sq=f32(sum_pi_sq),
      is_w=f32(rng.uniform(0.5, 1.5, size=(B, G, T))),
  )


def _ctx(name, d, *, kl=False, is_w=False):
  """The context inputs of estimator ``name`` from ``_inputs``' dict."""
  ctx = {"token_mask_BxGxT": d["tm"]}
  if name == "gae":
    ctx["values_BxGxT"] = d["values"]
  if name == "optimal_token_baseline":
    ctx["old_logp_BxGxT"] = d["old_logp"]
    ctx["sum_pi_sq_BxGxT"] = d["sum_pi_sq"]
    if is_w:
      ctx["is_weights_BxGxT"] = d["is_w"]
  if kl:
    ctx["kl_BxGxT"] = d["kl"]
  return ctx


def _run(tx, rewards, mask=None, **ctx):
  adv, state = tx.update(rewards, tx.init(rewards), mask_BxG=mask, **ctx)
  del state
  return adv


# ----------------------------------------------------------------------------
# Independent numpy references (verl semantics), float64.
# ----------------------------------------------------------------------------


def ref_valid(tm, mask):
  if mask is None:
    return np.asarray(tm, bool)
  return np.asarray(tm, bool) & np.asarray(mask, bool)[..., None]


def ref_token_rewards(r, valid, kl=None, kl_coef=0.0):
  """Outcome reward on each row's last valid token, minus kl_coef * kl."""
  b, g, t = valid.shape
  out = np.zeros((b, g, t))
  for i in range(b):
    for j in range(g):
      idx = np.flatnonzero(valid[i, j])
      if idx.size:
        out[i, j, idx[-1]] = r[i, j]
      if kl is not None:
        for s in range(t):
          if valid[i, j, s]:
            out[i, j, s] -= kl_coef * float(kl[i, j, s])
  return out


def ref_whiten(x, valid, eps=1e-8):
  """verl masked_whiten: (x - mean) / sqrt(var_unbiased + eps), 0 off-mask."""
  vals = np.asarray(x, np.float64)[valid]
  if vals.size == 0:
    return np.zeros(valid.shape)
  mean = vals.mean()
  var = vals.var(ddof=1) if vals.size > 1 else 0.0
  return np.where(valid, (x - mean) / np.sqrt(var + eps), 0.0)


def ref_reinforce_pp(r, mask, tm, *, gamma=1.0, kl=None, kl_coef=0.0):
  valid = ref_valid(tm, mask)
  r_tok = ref_token_rewards(r, valid, kl, kl_coef)
  b, g, t = valid.shape
  ret = np.zeros((b, g, t))
  for i in range(b):
    for j in range(g):
      running = 0.0
      for s in reversed(range(t)):
        running = r_tok[i, j, s] + gamma * running
        ret[i, j, s] = running
        running *= float(valid[i, j, s])
  return ref_whiten(ret, valid)


def ref_reinforce_pp_baseline(r, mask, tm, *, singleton="zero"):
  b, g = r.shape
  mask = np.ones((b, g), bool) if mask is None else np.asarray(mask, bool)
  a = np.zeros((b, g))
  keep = mask.copy()
  for i in range(b):
    members = np.flatnonzero(mask[i])
    if members.size == 1:
      if singleton == "raw":  # verl: mean 0, so the raw score
        a[i, members[0]] = r[i, members[0]]
      else:
        keep[i, members[0]] = False
    elif members.size > 1:
      mu = np.mean([float(r[i, j]) for j in members])
      for j in members:
        a[i, j] = r[i, j] - mu
  valid = ref_valid(tm, keep)
  return ref_whiten(np.broadcast_to(a[..., None], valid.shape), valid)


def ref_otb(r, mask, tm, old_logp, sum_pi_sq, *, is_w=None, kl=None,
            kl_coef=0.0, singleton="zero", eps=1e-8):
  """Section 1.10: per-group, per-absolute-position weighted baseline."""
  b, g, t = tm.shape
  mask = np.ones((b, g), bool) if mask is None else np.asarray(mask, bool)
  valid = ref_valid(tm, mask)
  m = valid.astype(np.float64)
  r_tok = ref_token_rewards(r, valid, kl, kl_coef)
  # R_t = reverse cumulative sum of r_tok * m (no reset at gaps).
  ret = np.zeros((b, g, t))
  w_cum = np.zeros((b, g, t))
  for i in range(b):
    for j in range(g):
      acc = 0.0
      for s in reversed(range(t)):
        acc += r_tok[i, j, s] * m[i, j, s]
        ret[i, j, s] = acc
      acc = 0.0
      for s in range(t):
        pi = np.exp(float(old_logp[i, j, s]))
        w = 1.0 - 2.0 * pi + float(sum_pi_sq[i, j, s])
        if is_w is not None:
          w *= float(is_w[i, j, s])**2
        acc += w * m[i, j, s]
        w_cum[i, j, s] = acc
  adv = np.zeros((b, g, t))
  for i in range(b):
    members = np.flatnonzero(mask[i])
    if members.size == 1:
      if singleton == "raw":  # baseline 0: the advantage is the return
        j = members[0]
        adv[i, j] = ret[i, j] * m[i, j]
      continue
    for s in range(t):
      num = sum(ret[i, j, s] * w_cum[i, j, s] * m[i, j, s] for j in members)
      den = sum(w_cum[i, j, s] * m[i, j, s] for j in members)
      base = num / (den + eps)
      for j in members:
        adv[i, j, s] = (ret[i, j, s] - base) * m[i, j, s]
  return adv


def ref_gae(r, mask, tm, values, *, gamma=1.0, lam=1.0, kl=None, kl_coef=0.0,
            whiten_advantages=True):
  valid = ref_valid(tm, mask)
  r_tok = ref_token_rewards(r, valid, kl, kl_coef)
  b, g, t = valid.shape
  adv = np.zeros((b, g, t))
  for i in range(b):
    for j in range(g):
      nextvalues = 0.0
      lastgaelam = 0.0
      for s in reversed(range(t)):
        m_t = float(valid[i, j, s])
        v_t = float(values[i, j, s])
        delta = r_tok[i, j, s] + gamma * nextvalues - v_t
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = v_t * m_t + (1 - m_t) * nextvalues
        lastgaelam = lastgaelam_ * m_t + (1 - m_t) * lastgaelam
        adv[i, j, s] = lastgaelam
  if whiten_advantages:
    return ref_whiten(adv, valid)
  return np.where(valid, adv, 0.0)


def _make(name, kw):
  return getattr(A, name)(**kw)


def _reference(name, kw, d, mask, ctx):
  """Dispatches to the numpy reference of ``name`` with factory kwargs."""
  r, tm = d["rewards"], ctx["token_mask_BxGxT"]
  kl = ctx.get("kl_BxGxT")
  if name == "reinforce_pp":
    return ref_reinforce_pp(r, mask, tm, gamma=kw.get("gamma", 1.0), kl=kl,
                            kl_coef=kw.get("kl_coef", 0.0))
  if name == "reinforce_pp_baseline":
    return ref_reinforce_pp_baseline(r, mask, tm,
                                     singleton=kw.get("singleton", "zero"))
  if name == "optimal_token_baseline":
    return ref_otb(r, mask, tm, ctx["old_logp_BxGxT"], ctx["sum_pi_sq_BxGxT"],
                   is_w=ctx.get("is_weights_BxGxT"), kl=kl,
                   kl_coef=kw.get("kl_coef", 0.0),
                   singleton=kw.get("singleton", "zero"))
  if name == "gae":
    return ref_gae(r, mask, tm, ctx["values_BxGxT"],
                   gamma=kw.get("gamma", 1.0), lam=kw.get("lam", 1.0), kl=kl,
                   kl_coef=kw.get("kl_coef", 0.0),
                   whiten_advantages=kw.get("whiten_advantages", True))
  raise ValueError(name)


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


class HelpersTest(parameterized.TestCase):

  def test_last_token_onehot(self):
    tm = np.array([[[1, 1, 0, 0],   # prefix
                    [1, 0, 1, 0],   # gap: last valid is t = 2
                    [0, 0, 0, 0]],  # empty: all False
                   [[1, 1, 1, 1],   # full
                    [0, 0, 0, 1],   # a single valid token at the end
                    [1, 0, 0, 0]]], bool)
    want = np.array([[[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
                     [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]]], bool)
    out = _token.last_token_onehot(tm)
    self.assertEqual(out.dtype, np.bool_)
    np.testing.assert_array_equal(np.asarray(out), want)

  @parameterized.named_parameters(
      ("short", 1), ("odd", 7), ("pow2", 16), ("long", 37))
  def test_reverse_discounted_sum_matches_loop(self, t):
    rng = np.random.default_rng(t)
    b = rng.normal(size=(2, 3, t))
    a = rng.uniform(-1.2, 1.2, size=(2, 3, t))
    want = np.zeros_like(b)
    for i in range(2):
      for j in range(3):
        x = 0.0
        for s in reversed(range(t)):
          x = b[i, j, s] + a[i, j, s] * x
          want[i, j, s] = x
    out = _token.reverse_discounted_sum(b.astype(np.float32),
                                        a.astype(np.float32))
    self.assertEqual(out.shape, (2, 3, t))
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(
      ("gamma1_prefix", 1.0, False), ("gamma09_prefix", 0.9, False),
      ("gamma1_gaps", 1.0, True), ("gamma07_gaps", 0.7, True))
  def test_returns_to_go_matches_verl_loop(self, gamma, gaps):
    d = _inputs(11, gaps=gaps)
    valid = d["tm"]
    r_tok = np.random.default_rng(5).normal(size=valid.shape)
    want = np.zeros_like(r_tok)
    for i in range(B):
      for j in range(G):
        running = 0.0
        for s in reversed(range(T)):
          running = r_tok[i, j, s] + gamma * running
          want[i, j, s] = running
          running *= float(valid[i, j, s])
    out = _token.returns_to_go(r_tok.astype(np.float32), valid, gamma)
    # Equal at every position, masked ones included.
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)

  def test_returns_to_go_by_hand(self):
    # gamma = 0.5, reward 1 on the last token.
    # Prefix mask [1, 1, 1]: R = [0.25, 0.5, 1].
    # Gap mask [1, 0, 1]: R_2 = 1; R_1 = 0 + 0.5 * m_2 * R_2 = 0.5;
    # R_0 = 0 + 0.5 * m_1 * R_1 = 0 (the return resets after the gap).
    r_tok = np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]], np.float32)
    valid = np.array([[[1, 1, 1], [1, 0, 1]]], bool)
    out = _token.returns_to_go(r_tok, valid, 0.5)
    np.testing.assert_allclose(np.asarray(out),
                               [[[0.25, 0.5, 1.0], [0.0, 0.5, 1.0]]],
                               atol=1e-7)


# ----------------------------------------------------------------------------
# Golden values on random inputs.
# ----------------------------------------------------------------------------


class GoldenTest(parameterized.TestCase):

  def _check(self, name, kw, *, seed=0, gaps=False, masked=True, kl=False,
             is_w=False):
    d = _inputs(seed, gaps=gaps, masked=masked)
    mask = d["mask"] if masked else None
    ctx = _ctx(name, d, kl=kl, is_w=is_w)
    out = _run(_make(name, kw), d["rewards"], mask, **ctx)
    self.assertEqual(out.shape, (B, G, T))
    self.assertEqual(out.dtype, np.float32)
    want = _reference(name, kw, d, mask, ctx)
    np.testing.assert_allclose(np.asarray(out), want, **F32_TOL)
    # Exactly 0 off the valid tokens and on masked samples.
    off = ~ref_valid(d["tm"], mask)
    np.testing.assert_array_equal(np.asarray(out)[off], 0.0)
    return out, want

  @parameterized.product(
      gamma=(1.0, 0.9), kl_coef=(0.0, 0.1), gaps=(False, True),
      masked=(False, True))
  def test_reinforce_pp(self, gamma, kl_coef, gaps, masked):
    self._check("reinforce_pp", dict(gamma=gamma, kl_coef=kl_coef),
                gaps=gaps, masked=masked, kl=kl_coef != 0)

  def test_reinforce_pp_kl_without_coef_is_ignored(self):
    # kl_BxGxT in ctx with the default kl_coef = 0 changes nothing.
    d = _inputs(1)
    tx = A.reinforce_pp()
    with_kl = _run(tx, d["rewards"], d["mask"], **_ctx("reinforce_pp", d,
                                                        kl=True))
    without = _run(tx, d["rewards"], d["mask"], **_ctx("reinforce_pp", d))
    np.testing.assert_allclose(np.asarray(with_kl), np.asarray(without),
                               atol=1e-7)

  @parameterized.product(singleton=("zero", "raw"), gaps=(False, True),
                         masked=(False, True))
  def test_reinforce_pp_baseline(self, singleton, gaps, masked):
    self._check("reinforce_pp_baseline", dict(singleton=singleton),
                gaps=gaps, masked=masked)

  def test_reinforce_pp_baseline_singleton_policies(self):
    d = _inputs(2)
    ctx = _ctx("reinforce_pp_baseline", d)
    r, mask, tm = d["rewards"], d["mask"], d["tm"]
    zero = np.asarray(_run(A.reinforce_pp_baseline(singleton="zero"), r, mask,
                           **ctx))
    raw = np.asarray(_run(A.reinforce_pp_baseline(singleton="raw"), r, mask,
                          **ctx))
    # Row 3 is a singleton: 0 under "zero" ...
    np.testing.assert_array_equal(zero[3], 0.0)
    # ... and under "raw" its raw reward, whitened with the rest of the batch.
    keep = mask.copy()
    a = np.zeros((B, G))
    for i in range(B):
      if mask[i].sum() > 1:
        a[i, mask[i]] = r[i, mask[i]] - r[i, mask[i]].mean()
    a[3, 0] = r[3, 0]
    valid = ref_valid(tm, keep)
    x = np.broadcast_to(a[..., None], valid.shape)[valid]
    want = (r[3, 0] - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(raw[3, 0][tm[3, 0]], want, **F32_TOL)
    # The singleton under "zero" stays out of the statistics: the other rows
    # equal a run in which row 3 is masked out entirely.
    mask3 = mask.copy()
    mask3[3] = False
    zero3 = np.asarray(_run(A.reinforce_pp_baseline(singleton="zero"), r,
                            mask3, **ctx))
    np.testing.assert_allclose(zero, zero3, atol=1e-7)

  def test_reinforce_pp_baseline_all_equal_group(self):
    # An all-equal group gives -mean_batch / std_batch, not 0 (section 1.5).
    d = _inputs(3, masked=False)
    r = d["rewards"].copy()
    r[0] = 0.7
    ctx = _ctx("reinforce_pp_baseline", d)
    out = np.asarray(_run(A.reinforce_pp_baseline(), r, None, **ctx))
    a = r - r.mean(axis=1, keepdims=True)
    x = np.broadcast_to(a[..., None], d["tm"].shape)[d["tm"]]
    want = -x.mean() / np.sqrt(x.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(out[0][d["tm"][0]], want, **F32_TOL)

  @parameterized.product(singleton=("zero", "raw"), is_w=(False, True),
                         gaps=(False, True))
  def test_otb(self, singleton, is_w, gaps):
    self._check("optimal_token_baseline", dict(singleton=singleton),
                gaps=gaps, is_w=is_w)

  @parameterized.named_parameters(("prefix", False), ("gaps", True))
  def test_otb_kl_and_no_mask(self, gaps):
    self._check("optimal_token_baseline", dict(kl_coef=0.2), gaps=gaps,
                masked=False, kl=True, is_w=True)

  def test_otb_is_weights_change_the_result(self):
    d = _inputs(4)
    tx = A.optimal_token_baseline()
    name = "optimal_token_baseline"
    plain = _run(tx, d["rewards"], d["mask"], **_ctx(name, d))
    weighted = _run(tx, d["rewards"], d["mask"], **_ctx(name, d, is_w=True))
    self.assertGreater(np.abs(np.asarray(plain - weighted)).max(), 1e-3)
    # Unit weights are the same as none.
    ones = dict(_ctx(name, d), is_weights_BxGxT=np.ones((B, G, T), np.float32))
    np.testing.assert_allclose(np.asarray(_run(tx, d["rewards"], d["mask"],
                                               **ones)),
                               np.asarray(plain), atol=1e-6)

  @parameterized.named_parameters(("prefix", False), ("gaps", True))
  def test_otb_singleton_raw_gives_the_return(self, gaps):
    d = _inputs(5, gaps=gaps)
    name = "optimal_token_baseline"
    ctx = _ctx(name, d)
    raw = np.asarray(_run(A.optimal_token_baseline(singleton="raw"),
                          d["rewards"], d["mask"], **ctx))
    zero = np.asarray(_run(A.optimal_token_baseline(singleton="zero"),
                           d["rewards"], d["mask"], **ctx))
    # Row 3 is a singleton with outcome reward only: its return is the reward
    # on every valid token (gamma = 1, no reset).
    tm = d["tm"][3, 0]
    np.testing.assert_allclose(raw[3, 0], np.where(tm, d["rewards"][3, 0], 0),
                               atol=1e-6)
    np.testing.assert_array_equal(zero[3], 0.0)
    # The other groups agree.
    np.testing.assert_array_equal(raw[:3], zero[:3])

  @parameterized.product(
      gamma_lam=((1.0, 1.0), (0.99, 0.95), (0.8, 0.5)), kl_coef=(0.0, 0.1),
      whiten_advantages=(True, False), gaps=(False, True))
  def test_gae(self, gamma_lam, kl_coef, whiten_advantages, gaps):
    gamma, lam = gamma_lam
    self._check("gae", dict(gamma=gamma, lam=lam, kl_coef=kl_coef,
                            whiten_advantages=whiten_advantages),
                gaps=gaps, masked=gamma < 1, kl=kl_coef != 0)

  @parameterized.named_parameters(("prefix", False), ("gaps", True))
  def test_gae_ignores_values_at_invalid_tokens(self, gaps):
    # Masked positions carry V_{t+1} and A_{t+1} through unchanged, so the
    # critic's values there never matter.
    d = _inputs(6, gaps=gaps)
    tx = A.gae(gamma=0.9, lam=0.8, whiten_advantages=False)
    ctx = _ctx("gae", d)
    out = _run(tx, d["rewards"], d["mask"], **ctx)
    valid = ref_valid(d["tm"], d["mask"])
    ctx["values_BxGxT"] = np.where(valid, d["values"], 1e3).astype(np.float32)
    out2 = _run(tx, d["rewards"], d["mask"], **ctx)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out2), atol=1e-6)

  def test_gae_gap_carries_next_value_through(self):
    # gamma = lam = 1, no whitening: A_t = R - V_t for every valid token, and
    # a gap changes nothing but zeroes its own positions.
    d = _inputs(7, gaps=True, masked=False)
    tx = A.gae(whiten_advantages=False)
    out = np.asarray(_run(tx, d["rewards"], None, **_ctx("gae", d)))
    want = np.where(d["tm"], d["rewards"][..., None] - d["values"], 0)
    np.testing.assert_allclose(out, want, **F32_TOL)


# ----------------------------------------------------------------------------
# Hand-computed cases.
# ----------------------------------------------------------------------------


class HandComputedTest(parameterized.TestCase):

  def test_gae_1x2x3(self):
    # gamma = lam = 1, no whitening. Rewards [1, 2].
    # Row 0, mask [1, 1, 1], V = [0.5, 0.2, 0.1], r_tok = [0, 0, 1]:
    #   t=2: delta = 1 + 0 - 0.1 = 0.9;            A_2 = 0.9
    #   t=1: delta = 0 + 0.1 - 0.2 = -0.1;         A_1 = -0.1 + 0.9 = 0.8
    #   t=0: delta = 0 + 0.2 - 0.5 = -0.3;         A_0 = -0.3 + 0.8 = 0.5
    # Row 1, mask [1, 0, 1], V = [0.3, 9.0, 0.4], r_tok = [0, 0, 2]:
    #   t=2: delta = 2 + 0 - 0.4 = 1.6;            A_2 = 1.6, next V = 0.4
    #   t=1: masked, carries next V = 0.4 and A = 1.6; output 0
    #   t=0: delta = 0 + 0.4 - 0.3 = 0.1;          A_0 = 0.1 + 1.6 = 1.7
    rewards = np.array([[1.0, 2.0]], np.float32)
    tm = np.array([[[1, 1, 1], [1, 0, 1]]], bool)
    values = np.array([[[0.5, 0.2, 0.1], [0.3, 9.0, 0.4]]], np.float32)
    tx = A.gae(gamma=1.0, lam=1.0, whiten_advantages=False)
    out = _run(tx, rewards, token_mask_BxGxT=tm, values_BxGxT=values)
    np.testing.assert_allclose(np.asarray(out),
                               [[[0.5, 0.8, 0.9], [1.7, 0.0, 1.6]]],
                               atol=1e-6)

  def test_gae_discounted_1x1x2(self):
    # gamma = 0.5, lam = 0.5, reward 1, V = [0.2, 0.4], no whitening:
    #   t=1: delta = 1 + 0.5 * 0 - 0.4 = 0.6;      A_1 = 0.6
    #   t=0: delta = 0 + 0.5 * 0.4 - 0.2 = 0.0;    A_0 = 0 + 0.25 * 0.6 = 0.15
    tx = A.gae(gamma=0.5, lam=0.5, whiten_advantages=False)
    out = _run(tx, np.ones((1, 1), np.float32),
               token_mask_BxGxT=np.ones((1, 1, 2), bool),
               values_BxGxT=np.array([[[0.2, 0.4]]], np.float32))
    np.testing.assert_allclose(np.asarray(out), [[[0.15, 0.6]]], atol=1e-6)

  def test_reinforce_pp_1x2x2(self):
    # gamma = 1, rewards [1, 3], masks [1, 1] and [1, 0]: returns are
    # [1, 1] and [3, -]. Valid returns {1, 1, 3}: mean 5/3, unbiased var
    # ((2/3)^2 + (2/3)^2 + (4/3)^2) / 2 = (24/9) / 2 = 4/3.
    # A = (R - 5/3) / sqrt(4/3 + 1e-8): 1 -> -(2/3)/sqrt(4/3) = -1/sqrt(3),
    # 3 -> (4/3)/sqrt(4/3) = 2/sqrt(3).
    rewards = np.array([[1.0, 3.0]], np.float32)
    tm = np.array([[[1, 1], [1, 0]]], bool)
    out = _run(A.reinforce_pp(), rewards, token_mask_BxGxT=tm)
    s3 = np.sqrt(3.0)
    np.testing.assert_allclose(np.asarray(out),
                               [[[-1 / s3, -1 / s3], [2 / s3, 0.0]]],
                               rtol=1e-6)

  def test_otb_1x2x2(self):
    # Rewards [1, -1]; masks [1, 1] and [1, 0].
    # Row 0: pi = 0.5, sum pi^2 = 0.5 -> w = 1 - 1 + 0.5 = 0.5, W = [0.5, 1].
    # Row 1: pi = 0.25, sum pi^2 = 0.5 -> w = 1 - 0.5 + 0.5 = 1, W = [1, -].
    # Returns: row 0 [1, 1], row 1 [-1, -].
    # b_0 = (1 * 0.5 + (-1) * 1) / (0.5 + 1) = -1/3;  b_1 = (1 * 1) / 1 = 1.
    # A = row 0 [1 + 1/3, 1 - 1] = [4/3, 0], row 1 [-1 + 1/3, 0] = [-2/3, 0].
    rewards = np.array([[1.0, -1.0]], np.float32)
    tm = np.array([[[1, 1], [1, 0]]], bool)
    old_logp = np.log(np.array([[[0.5, 0.5], [0.25, 0.25]]], np.float32))
    sum_pi_sq = np.full((1, 2, 2), 0.5, np.float32)
    out = _run(A.optimal_token_baseline(), rewards, token_mask_BxGxT=tm,
               old_logp_BxGxT=old_logp, sum_pi_sq_BxGxT=sum_pi_sq)
    np.testing.assert_allclose(np.asarray(out),
                               [[[4 / 3, 0.0], [-2 / 3, 0.0]]], atol=1e-6)

  def test_otb_zero_tail(self):
    # As above; row 0 is strictly the longest, so beyond row 1's last token
    # (t = 1) its baseline is 0 and A = R = 1 instead of 0.
    rewards = np.array([[1.0, -1.0]], np.float32)
    old_logp = np.log(np.array([[[0.5, 0.5], [0.25, 0.25]]], np.float32))
    sum_pi_sq = np.full((1, 2, 2), 0.5, np.float32)
    ctx = dict(old_logp_BxGxT=old_logp, sum_pi_sq_BxGxT=sum_pi_sq)
    tm = np.array([[[1, 1], [1, 0]]], bool)
    out = _run(A.optimal_token_baseline(handle_zero_tail=True), rewards,
               token_mask_BxGxT=tm, **ctx)
    np.testing.assert_allclose(np.asarray(out),
                               [[[4 / 3, 1.0], [-2 / 3, 0.0]]], atol=1e-6)
    # Two equally long samples: no tail, so the option changes nothing.
    tm = np.ones((1, 2, 2), bool)
    plain, handled = (
        _run(A.optimal_token_baseline(handle_zero_tail=h), rewards,
             token_mask_BxGxT=tm, **ctx) for h in (False, True))
    np.testing.assert_array_equal(plain, handled)
    self.assertGreater(float(np.abs(np.asarray(plain)).max()), 0.0)


# ----------------------------------------------------------------------------
# Shared properties: masking, dtypes, jit, errors.
# ----------------------------------------------------------------------------

_FULL_KW = {
    "reinforce_pp": dict(gamma=0.9, kl_coef=0.1),
    "reinforce_pp_baseline": dict(),
    "optimal_token_baseline": dict(kl_coef=0.1),
    "gae": dict(gamma=0.9, lam=0.8, kl_coef=0.1),
}


def _full_ctx(name, d):
  use_kl = _FULL_KW[name].get("kl_coef", 0) != 0
  return _ctx(name, d, kl=use_kl, is_w=name == "optimal_token_baseline")


class PropertiesTest(parameterized.TestCase):

  @parameterized.product(name=ESTIMATORS, gaps=(False, True))
  def test_masked_samples_are_zero_and_do_not_enter_statistics(self, name,
                                                               gaps):
    d = _inputs(8, gaps=gaps)
    tx = _make(name, _FULL_KW[name])
    mask = d["mask"].copy()
    mask[0, 2] = False
    out = np.asarray(_run(tx, d["rewards"], mask, **_full_ctx(name, d)))
    np.testing.assert_array_equal(out[~mask], 0.0)
    # Change everything about the masked samples.
    rng = np.random.default_rng(99)
    d2 = dict(d)
    off = ~mask
    d2["rewards"] = np.where(off, 100.0, d["rewards"]).astype(np.float32)
    d2["tm"] = np.where(off[..., None], ~d["tm"], d["tm"])
    for k in ("values", "kl", "is_w"):
      d2[k] = np.where(off[..., None], rng.normal(size=(B, G, T)) * 50,
                       d[k]).astype(np.float32)
    d2["old_logp"] = np.where(off[..., None], -0.01, d["old_logp"]).astype(
        np.float32)
    out2 = np.asarray(_run(tx, d2["rewards"], mask, **_full_ctx(name, d2)))
    np.testing.assert_array_equal(out2, out)

  @parameterized.parameters(*ESTIMATORS)
  def test_jit_equals_eager(self, name):
    d = _inputs(9, gaps=True)
    tx = _make(name, _FULL_KW[name])
    ctx = _full_ctx(name, d)
    eager = _run(tx, d["rewards"], d["mask"], **ctx)

    @jax.jit
    def f(rewards, mask, ctx):
      return _run(tx, rewards, mask, **ctx)

    jitted = f(d["rewards"], d["mask"], ctx)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager),
                               rtol=1e-6, atol=1e-6)

  @parameterized.parameters(*ESTIMATORS)
  def test_float64_agrees_with_float32(self, name):
    d = _inputs(10, gaps=True)
    tx = _make(name, _FULL_KW[name])
    out32 = _run(tx, d["rewards"], d["mask"], **_full_ctx(name, d))
    self.assertEqual(out32.dtype, np.float32)
    with jax.enable_x64(True):
      d64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
             for k, v in d.items()}
      out64 = _run(tx, d64["rewards"], d64["mask"], **_full_ctx(name, d64))
      self.assertEqual(out64.dtype, np.float64)
      out64 = np.asarray(out64)
    np.testing.assert_allclose(np.asarray(out32), out64, **F32_TOL)
    want = _reference(name, _FULL_KW[name], d64, d["mask"],
                      _full_ctx(name, d64))
    np.testing.assert_allclose(out64, want, rtol=1e-10, atol=1e-10)

  @parameterized.parameters(*ESTIMATORS)
  def test_missing_token_mask_raises(self, name):
    d = _inputs(0)
    ctx = _ctx(name, d)
    del ctx["token_mask_BxGxT"]
    tx = _make(name, {})
    with self.assertRaisesRegex(A.MissingContextError, "token_mask_BxGxT"):
      _run(tx, d["rewards"], d["mask"], **ctx)

  @parameterized.parameters("reinforce_pp", "optimal_token_baseline", "gae")
  def test_kl_coef_without_kl_raises(self, name):
    d = _inputs(0)
    tx = _make(name, dict(kl_coef=0.1))
    with self.assertRaisesRegex(A.MissingContextError, "kl_BxGxT"):
      _run(tx, d["rewards"], d["mask"], **_ctx(name, d))

  @parameterized.named_parameters(
      ("wrong_t", (B, G, T + 1)), ("wrong_g", (B, G + 1, T)),
      ("rank2", (B, G)))
  def test_wrong_values_shape_raises(self, shape):
    d = _inputs(0)
    ctx = _ctx("gae", d)
    ctx["values_BxGxT"] = np.zeros(shape, np.float32)
    with self.assertRaisesRegex(ValueError, "values_BxGxT"):
      _run(A.gae(), d["rewards"], d["mask"], **ctx)

  @parameterized.product(name=ESTIMATORS, dtype=(np.int32, np.float32))
  def test_non_bool_token_mask_raises(self, name, dtype):
    d = _inputs(0)
    ctx = _ctx(name, d)
    ctx["token_mask_BxGxT"] = d["tm"].astype(dtype)
    with self.assertRaisesRegex(TypeError, "token_mask_BxGxT"):
      _run(_make(name, {}), d["rewards"], d["mask"], **ctx)


if __name__ == "__main__":
  absltest.main()
