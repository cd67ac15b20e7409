"""Per-token policy surrogates: PPO clip and the losses built around it.

Every surrogate has the signature::

  f(logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT, *, ...)
      -> (loss_BxGxT, metrics)

* ``logp_BxGxT``: log-probability of the sampled token under the current
  policy (differentiable); ``old_logp_BxGxT``: under the behaviour (old)
  policy; ``adv``: advantages, ``adv_BxG`` (one per sequence, broadcast to
  the tokens) or ``adv_BxGxT`` (per token); ``mask_BxGxT``: bool, the valid
  tokens.
* ``loss_BxGxT`` is the per-token loss to *minimise*, 0 at masked tokens.
  Aggregation is not done here: the caller applies
  ``aggregate(loss_BxGxT, mask_BxGxT, mode)``. Sequence-level losses (GSPO,
  GMPO, LUSPO) put their sequence term on every valid token of the sequence;
  ``FIXED_AGGREGATION`` names the mode that reproduces the paper for the
  losses whose paper (or peer) fixes it.
* ``metrics`` is a ``dict[str, Deferred]`` of token means (no gradient), so
  they combine exactly across micro-batches with ``combine``.

Masked tokens are replaced by 0 before any arithmetic, so whatever they hold
(``-inf`` log-probs, NaN advantages) changes neither the value nor the
gradient. Token log-ratios ``logp - old_logp`` are clamped to
``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]`` (verl's +-20) before ``exp`` in every
loss (an argument in ``ppo_clip`` and ``hapo_clip``); this changes nothing in
the normal range and keeps extreme inputs finite.

Formulas follow ``reference/losses.md`` §2 and ``reference/estimators.md``
§2.2, §2.18 and §2.22 (verl ``core_algos.py`` at ``b178a3cd``, TRL
``grpo_trainer.py`` at ``f2cd5771``, HAPO at ``7671dde``).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks
from jaxrl_group.losses import _common
from jaxrl_group.losses._aggregation import Deferred
from jaxrl_group.losses._aggregation import token_mean

ArrayLike = jax.typing.ArrayLike
Metrics = dict[str, Deferred]

LOG_RATIO_CLAMP = 20.0  # verl clamps logp - old_logp to [-20, 20]


# ---------------------------------------------------------------------------
# Shared pieces.


def _adv_name(what: str, adv: Any) -> str:
  """``adv_BxG`` or ``adv_BxGxT`` by rank; a ValueError naming ``adv``."""
  ndim = len(jnp.shape(adv))
  if ndim == 2:
    return "adv_BxG"
  if ndim == 3:
    return "adv_BxGxT"
  raise ValueError(
      f"{what}: adv must be adv_BxG (shape [B, G], one advantage per "
      f"sequence) or adv_BxGxT (shape [B, G, T], per token), got shape "
      f"{tuple(jnp.shape(adv))}.")


class _Inputs(NamedTuple):
  """Checked inputs, zeroed at masked tokens, advantages per token."""

  logp: jax.Array  # [B, G, T], 0 at masked tokens
  old_logp: jax.Array | None  # [B, G, T], 0 at masked tokens
  adv: jax.Array  # [B, G, T], 0 at masked tokens
  mask: jax.Array  # [B, G, T] bool
  dtype: Any


def _prepare(what: str, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT,
             **extra) -> _Inputs:
  """Checks the inputs at trace time and zeroes them at masked tokens."""
  arrays = {"logp_BxGxT": logp_BxGxT, "old_logp_BxGxT": old_logp_BxGxT,
            _adv_name(what, adv): adv}
  _common.check_tokens(what, mask_BxGxT, **arrays, **extra)
  floats = [x for x in (logp_BxGxT, old_logp_BxGxT, adv) if x is not None]
  dtype = jnp.result_type(*floats)
  mask = jnp.asarray(mask_BxGxT)

  def clean(x):
    return jnp.where(mask, jnp.asarray(x, dtype), 0)

  logp = clean(logp_BxGxT)
  old_logp = None if old_logp_BxGxT is None else clean(old_logp_BxGxT)
  adv_t = clean(_common.token_adv(jnp.asarray(adv, dtype), mask))
  return _Inputs(logp, old_logp, adv_t, mask, dtype)


def _log_ratio(inp: _Inputs, clamp: float | None = LOG_RATIO_CLAMP):
  """``logp - old_logp`` (0 at masked tokens), clamped to ``+-clamp``."""
  delta = inp.logp - inp.old_logp
  if clamp is not None:
    delta = jnp.clip(delta, -clamp, clamp)
  return delta


def _metrics(inp: _Inputs, **values: jax.Array) -> Metrics:
  """Token means over the valid tokens, without gradient."""
  out = {}
  for name, x in values.items():
    x = jax.lax.stop_gradient(jnp.asarray(x).astype(inp.dtype))
    x = jnp.broadcast_to(x, inp.mask.shape)
    out[name] = token_mean(x, inp.mask)
  return out


def _kl_metrics(delta: jax.Array, ratio: jax.Array) -> dict:
  """verl's ``ppo_kl`` (mean of -delta) and the k3 estimate rho - 1 - delta."""
  return {"approx_kl": -delta, "approx_kl_k3": ratio - 1 - delta,
          "ratio_mean": ratio}


def _check_nonneg(what: str, **values) -> None:
  for name, v in values.items():
    if v is not None:
      _checks.check_nonnegative(name, v, what=what)


def _check_positive(what: str, **values) -> None:
  for name, v in values.items():
    if v is not None and _checks.is_concrete(v) and np.any(
        np.asarray(v) <= 0):
      raise ValueError(f"{what}: {name} must be > 0, got {v!r}.")


def _check_dual_clip(what: str, clip_ratio_c) -> None:
  if clip_ratio_c is not None and _checks.is_concrete(clip_ratio_c) and (
      np.any(np.asarray(clip_ratio_c) <= 1)):
    raise ValueError(
        f"{what}: clip_ratio_c must be > 1 (verl's dual-clip bound), got "
        f"{clip_ratio_c!r}; pass None to disable the dual clip.")


def _ppo_terms(ratio, adv, low, high, *, delta=None, clip_ratio_c=None):
  """The clipped surrogate ``max(-A r~, -A clip(r))``, dual clip for A < 0.

  Args:
    ratio: importance ratio (differentiable), any shape.
    adv: advantages, same shape.
    low, high: ``eps_low`` / ``eps_high`` (scalars or same shape); the clip
      range is ``[1 - low, 1 + high]``.
    delta: TRL's two-sided cap, ``r~ = min(r, delta)`` in the first term.
    clip_ratio_c: verl's dual clip: for A < 0 the loss is at most
      ``-A * clip_ratio_c``.

  Returns:
    ``(loss, indicators)``; the indicators are float 0/1 arrays:
    ``clipfrac`` (verl ``pg_clipfrac``: the clipped term is the larger),
    ``clipfrac_high`` (A > 0 and r > 1 + high), ``clipfrac_low`` (A < 0 and
    r < 1 - low), ``dual_clipfrac`` (verl ``pg_clipfrac_lower``: A < 0 and
    the dual cap binds).
  """
  r1 = ratio if delta is None else jnp.minimum(ratio, delta)
  l1 = -adv * r1
  l2 = -adv * jnp.clip(ratio, 1 - low, 1 + high)
  loss = jnp.maximum(l1, l2)
  dual = jnp.zeros(jnp.shape(loss), bool)
  if clip_ratio_c is not None:
    l3 = -adv * clip_ratio_c
    dual = (adv < 0) & (loss > l3)
    loss = jnp.where(adv < 0, jnp.minimum(loss, l3), loss)
  ind = {
      "clipfrac": l2 > l1,
      "clipfrac_high": (adv > 0) & (ratio > 1 + high),
      "clipfrac_low": (adv < 0) & (ratio < 1 - low),
      "dual_clipfrac": dual,
  }
  return loss, ind


def _finish(inp: _Inputs, loss: jax.Array, metrics: Metrics):
  loss = jnp.broadcast_to(loss, inp.mask.shape)
  return jnp.where(inp.mask, loss, 0).astype(inp.dtype), metrics


# ---------------------------------------------------------------------------
# PPO clip.


def ppo_clip(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike,
             adv: ArrayLike, mask_BxGxT: ArrayLike, *,
             eps_low: float = 0.2, eps_high: float = 0.2,
             clip_ratio_c: float | None = None,
             delta: float | None = None,
             log_ratio_clamp: float | None = LOG_RATIO_CLAMP
             ) -> tuple[jax.Array, Metrics]:
  """PPO clipped surrogate with decoupled bounds, dual clip and TRL's delta.

  ``loss = max(-A * r~, -A * clip(r, 1 - eps_low, 1 + eps_high))`` with
  ``r = exp(clamp(logp - old_logp))`` and ``r~ = min(r, delta)`` when
  ``delta`` is set (TRL, "two-sided clipping" of INTELLECT-2). With
  ``clip_ratio_c`` (verl's dual clip, Ye et al. arXiv 1912.09729), tokens
  with A < 0 get ``min(loss, -A * clip_ratio_c)``.

  verl ``loss_mode="vanilla"``; TRL ``loss_type`` grpo / bnpo / dr_grpo /
  dapo (those differ only in the aggregation). GRPO (arXiv 2402.03300) uses
  eps 0.2; DAPO (arXiv 2503.14476) ``eps_high=0.28`` ("clip-higher").

  Args:
    logp_BxGxT: current log-probs of the sampled tokens, ``[B, G, T]``.
    old_logp_BxGxT: behaviour-policy log-probs, ``[B, G, T]``.
    adv: advantages, ``adv_BxG`` ``[B, G]`` or ``adv_BxGxT`` ``[B, G, T]``.
    mask_BxGxT: bool, valid tokens, ``[B, G, T]``.
    eps_low: lower clip range (verl ``clip_ratio_low``, TRL ``epsilon``).
    eps_high: upper clip range (verl ``clip_ratio_high``, TRL
      ``epsilon_high``); a relative bound ``1 + eps_high``.
    clip_ratio_c: verl dual clip (> 1; verl's default when enabled is 3.0,
      HAPO uses 10). None (default) disables it.
    delta: TRL's cap on the unclipped ratio; None (default) disables it.
    log_ratio_clamp: clamp of ``logp - old_logp`` before ``exp`` (verl 20);
      None disables it (TRL).

  Returns:
    ``(loss_BxGxT, metrics)``. Metrics (token means): ``clipfrac`` (verl
    ``pg_clipfrac``), ``clipfrac_high``, ``clipfrac_low`` (the upper or lower
    bound binds, TRL's ``clip_ratio/high_mean`` and ``low_mean``),
    ``dual_clipfrac`` (verl ``pg_clipfrac_lower``, which counts dual-clip
    activations), ``approx_kl`` (verl ``ppo_kl`` = mean of -delta),
    ``approx_kl_k3`` (mean of r - 1 - log r), ``ratio_mean``.
  """
  what = "ppo_clip"
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high, delta=delta)
  _check_positive(what, log_ratio_clamp=log_ratio_clamp)
  _check_dual_clip(what, clip_ratio_c)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp, log_ratio_clamp)
  ratio = jnp.exp(d)
  loss, ind = _ppo_terms(ratio, inp.adv, eps_low, eps_high, delta=delta,
                         clip_ratio_c=clip_ratio_c)
  return _finish(inp, loss, _metrics(inp, **ind, **_kl_metrics(d, ratio)))


# ---------------------------------------------------------------------------
# GSPO, GSPO-token, LUSPO.


def _gspo_sequence(inp: _Inputs, eps_low, eps_high, log_ratio_max):
  """GSPO's sequence loss ``[B, G]`` and its per-sequence indicators."""
  d = _log_ratio(inp)
  seq_log_ratio = _common.seq_mean(d, inp.mask)
  if log_ratio_max is not None:
    seq_log_ratio = jnp.minimum(seq_log_ratio, log_ratio_max)
  s = jnp.exp(seq_log_ratio)
  seq_adv = _common.seq_mean(inp.adv, inp.mask)
  loss, ind = _ppo_terms(s, seq_adv, eps_low, eps_high)
  del ind["dual_clipfrac"]
  ind = {k: v[..., None] for k, v in ind.items()}
  metrics = dict(ind, approx_kl=-d, ratio_mean=s[..., None],
                 seq_log_ratio=seq_log_ratio[..., None])
  return loss, metrics


def gspo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
         mask_BxGxT: ArrayLike, *, eps_low: float = 3e-4,
         eps_high: float = 4e-4, log_ratio_max: float | None = 10.0
         ) -> tuple[jax.Array, Metrics]:
  """GSPO: clipped surrogate on the length-normalised sequence ratio.

  See Zheng et al., GSPO (arXiv 2507.18071):
  ``s_i = exp(mean_t (logp - old_logp))`` over the valid tokens,
  ``l_i = max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))``; the
  gradient flows through the mean (TRL
  ``importance_sampling_level="sequence"``). ``l_i`` is placed on every
  valid token of sequence i, so ``aggregate(..., "seq_mean_token_mean")``
  gives the paper's ``(1/G) sum_i l_i`` (the mean over sequences; verl
  forces this mode, see ``FIXED_AGGREGATION``). Token-weighted modes would
  weight sequences by length (TRL warns about this).

  Defaults are the paper's clip ranges, 3e-4 / 4e-4 (GSPO v2 §5.1, also
  verl's GSPO example scripts and TRL's paper index); verl and TRL configs
  otherwise fall back to their generic 0.2 / 0.2.

  Args:
    logp_BxGxT: current log-probs, ``[B, G, T]``.
    old_logp_BxGxT: behaviour-policy log-probs, ``[B, G, T]``.
    adv: ``adv_BxG`` or ``adv_BxGxT``; per-token advantages are reduced to
      their mean over the sequence's valid tokens (equal to ``A_i`` when
      broadcast). Use ``gspo_token`` for genuinely per-token advantages.
    mask_BxGxT: bool, valid tokens.
    eps_low, eps_high: relative clip range of ``s_i``.
    log_ratio_max: upper clamp of ``log s_i`` (verl clamps at 10, which
      also stops the gradient there); None disables it (TRL).

  Returns:
    ``(loss_BxGxT, metrics)``: ``clipfrac``, ``clipfrac_high``,
    ``clipfrac_low`` (sequence events, token-weighted), ``approx_kl``
    (mean of -delta), ``ratio_mean`` (token-weighted mean of ``s_i``),
    ``seq_log_ratio``.
  """
  what = "gspo"
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  loss, m = _gspo_sequence(inp, eps_low, eps_high, log_ratio_max)
  return _finish(inp, loss[..., None], _metrics(inp, **m))


def gspo_token(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike,
               adv: ArrayLike, mask_BxGxT: ArrayLike, *,
               eps_low: float = 3e-4, eps_high: float = 4e-4,
               log_ratio_max: float | None = 10.0
               ) -> tuple[jax.Array, Metrics]:
  """GSPO-token: ``s_it = sg[s_i] * pi(y_t) / sg[pi(y_t)]``, per-token A.

  See Zheng et al., GSPO (arXiv 2507.18071), GSPO-token; verl
  ``loss_mode="gspo"`` implements GSPO in this form: the per-token
  log-ratio ``sg(log s_i) + logp_t - sg(logp_t)`` is clamped at
  ``log_ratio_max`` (verl 10), then clipped like PPO (no dual clip):
  ``l_t = max(-A_t s_it, -A_t clip(s_it, 1 - eps_low, 1 + eps_high))``.
  The value of ``s_it`` equals ``s_i``, and with ``A_t = A_i`` the value
  and the gradient under ``seq_mean_token_mean`` equal ``gspo``'s. The
  paper's objective (and verl) use ``seq_mean_token_mean``.

  Args:
    logp_BxGxT, old_logp_BxGxT, mask_BxGxT: as in ``gspo``.
    adv: ``adv_BxG`` or ``adv_BxGxT`` (per-token advantages allowed).
    eps_low, eps_high: relative clip range; defaults as in ``gspo``
      (the paper's 3e-4 / 4e-4).
    log_ratio_max: clamp of the per-token log-ratio (verl 10); None
      disables it.

  Returns:
    ``(loss_BxGxT, metrics)`` with ``clipfrac``, ``clipfrac_high``,
    ``clipfrac_low``, ``approx_kl``, ``ratio_mean``.
  """
  what = "gspo_token"
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  seq_log_ratio = jax.lax.stop_gradient(_common.seq_mean(d, inp.mask))
  tok = (seq_log_ratio[..., None] + inp.logp
         - jax.lax.stop_gradient(inp.logp))
  if log_ratio_max is not None:
    tok = jnp.minimum(tok, log_ratio_max)
  ratio = jnp.exp(tok)
  loss, ind = _ppo_terms(ratio, inp.adv, eps_low, eps_high)
  del ind["dual_clipfrac"]
  return _finish(inp, loss, _metrics(inp, **ind, approx_kl=-d,
                                     ratio_mean=ratio))


def luspo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
          mask_BxGxT: ArrayLike, *, eps_low: float = 3e-4,
          eps_high: float = 4e-4, log_ratio_max: float | None = 10.0
          ) -> tuple[jax.Array, Metrics]:
  """LUSPO: GSPO's sequence loss scaled by the sequence length ``|o_i|``.

  See Liu et al., Length-Unbiased Sequence Policy Optimization (arXiv
  2602.05261); TRL ``loss_type="luspo"`` (with
  ``importance_sampling_level="sequence"``): ``loss = mean_i(l_i |o_i|)``,
  ``l_i`` the GSPO sequence loss.

  Aggregation: the per-token output is ``l_i`` on every valid token (the
  same as ``gspo``), and the length scaling comes from the token *sum*:
  ``aggregate(..., "seq_mean_token_sum")`` gives ``sum_i l_i |o_i| / N``,
  the LUSPO loss (``FIXED_AGGREGATION["luspo"]``). N counts the non-empty
  sequences; TRL divides by all rows of the micro-batch (empty rows add 0).

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``gspo``.
    eps_low, eps_high: relative clip range of ``s_i``. LUSPO modifies GSPO,
      so the defaults are GSPO's 3e-4 / 4e-4; TRL's generic default is
      0.2 / 0.2.
    log_ratio_max: clamp of ``log s_i`` as in ``gspo``.

  Returns:
    ``(loss_BxGxT, metrics)`` as in ``gspo``.
  """
  what = "luspo"
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  loss, m = _gspo_sequence(inp, eps_low, eps_high, log_ratio_max)
  return _finish(inp, loss[..., None], _metrics(inp, **m))


# ---------------------------------------------------------------------------
# CISPO, SAPO, GMPO.

CISPO_CONVENTIONS = ("verl", "trl")


def cispo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
          mask_BxGxT: ArrayLike, *, convention: str = "verl",
          eps_low: float | None = None, eps_high: float | None = None,
          eps_max: float | None = None) -> tuple[jax.Array, Metrics]:
  """CISPO: REINFORCE with a clipped, stop-gradient importance weight.

  See MiniMax-M1 (arXiv 2506.13585): ``loss = -sg(w) * A * logp``. The two
  peers clip the weight differently, so the convention is an explicit
  argument with its own, separately named parameters:

  * ``"verl"`` (``loss_mode="cispo"``): ``w = clip(r, 1 - eps_low,
    1 + eps_high)``, two-sided and relative to 1 (defaults 0.2 / 0.2).
  * ``"trl"`` (``loss_type="cispo"``): ``w = min(r, eps_max)``, an absolute
    upper cap only (TRL passes it as ``epsilon_high``; ScaleRL, arXiv
    2510.13786, recommends 5.0, the default here).

  Passing the other convention's parameter raises, since TRL's
  ``epsilon_high`` is an absolute cap where verl's is a relative bound.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    convention: ``"verl"`` (default) or ``"trl"``.
    eps_low, eps_high: verl's relative bounds (convention ``"verl"`` only).
    eps_max: TRL's absolute cap (convention ``"trl"`` only).

  Returns:
    ``(loss_BxGxT, metrics)``: ``clipfrac_high`` / ``clipfrac_low`` (the
    weight hit the upper / lower bound, whatever the sign of A),
    ``is_weight_mean`` (mean of w), ``approx_kl``, ``approx_kl_k3``,
    ``ratio_mean``.
  """
  what = "cispo"
  _checks.check_choice("convention", convention, CISPO_CONVENTIONS,
                       what=what)
  if convention == "verl":
    if eps_max is not None:
      raise ValueError(
          "cispo: eps_max is TRL's absolute cap (convention='trl'); with "
          "convention='verl' use eps_low / eps_high, the relative bounds "
          "[1 - eps_low, 1 + eps_high].")
    eps_low = 0.2 if eps_low is None else eps_low
    eps_high = 0.2 if eps_high is None else eps_high
    _check_nonneg(what, eps_low=eps_low, eps_high=eps_high)
  else:
    if eps_low is not None or eps_high is not None:
      raise ValueError(
          "cispo: eps_low / eps_high are verl's relative bounds "
          "(convention='verl'); convention='trl' takes eps_max, the "
          "absolute cap on the weight (TRL's epsilon_high, recommended "
          "5.0).")
    eps_max = 5.0 if eps_max is None else eps_max
    _check_positive(what, eps_max=eps_max)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  ratio = jnp.exp(d)
  if convention == "verl":
    upper, lower = 1 + eps_high, 1 - eps_low
    w = jnp.clip(ratio, lower, upper)
    low_hit = ratio < lower
  else:
    upper = eps_max
    w = jnp.minimum(ratio, upper)
    low_hit = jnp.zeros(ratio.shape, bool)
  w = jax.lax.stop_gradient(w)
  loss = -w * inp.adv * inp.logp
  return _finish(inp, loss, _metrics(
      inp, clipfrac_high=ratio > upper, clipfrac_low=low_hit,
      is_weight_mean=w, **_kl_metrics(d, ratio)))


def sapo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
         mask_BxGxT: ArrayLike, *, tau_pos: float = 1.0,
         tau_neg: float = 1.05) -> tuple[jax.Array, Metrics]:
  """SAPO: a soft sigmoid gate in place of the hard clip.

  See Soft Adaptive Policy Optimization (arXiv 2511.20347); verl
  ``loss_mode="sapo"``, TRL ``loss_type="sapo"``:
  ``loss = -sigmoid(tau (r - 1)) * 4 / tau * A`` with ``tau = tau_pos`` if
  A > 0 else ``tau_neg``. At r = 1 the gradient equals the PPO one. verl
  forces and TRL uses ``seq_mean_token_mean``.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    tau_pos: temperature for A > 0 (verl / TRL default 1.0).
    tau_neg: temperature for A <= 0 (default 1.05).

  Returns:
    ``(loss_BxGxT, metrics)``: ``gate_mean`` (mean of
    ``sigmoid(tau (r - 1)) * 4 / tau``), ``approx_kl``, ``approx_kl_k3``,
    ``ratio_mean``.
  """
  what = "sapo"
  _check_positive(what, tau_pos=tau_pos, tau_neg=tau_neg)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  ratio = jnp.exp(d)
  tau = jnp.where(inp.adv > 0, tau_pos, tau_neg).astype(inp.dtype)
  gate = jax.nn.sigmoid(tau * (ratio - 1)) * 4 / tau
  loss = -gate * inp.adv
  return _finish(inp, loss, _metrics(inp, gate_mean=gate,
                                     **_kl_metrics(d, ratio)))


def gmpo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
         mask_BxGxT: ArrayLike, *, eps_low: float = 0.4,
         eps_high: float = 0.4) -> tuple[jax.Array, Metrics]:
  """GMPO: geometric-mean sequence ratio with a sign-aware log-space clip.

  See Zhao et al., Geometric-Mean Policy Optimization (arXiv 2507.20673);
  verl ``loss_mode="geo_mean"``. Per token
  ``d~ = sgn(A) min(sgn(A) d, sgn(A) clip(d, -eps_low, eps_high))`` with
  ``d = logp - old_logp``; per sequence ``rho_i = exp(mean_t d~)``,
  ``A_i = mean_t A`` and ``l_i = -A_i rho_i``.

  The aggregation is fixed by the method: a plain mean of ``l_i`` over
  sequences (verl ignores ``loss_agg_mode``). ``l_i`` is placed on every
  valid token, so this is ``aggregate(..., "seq_mean_token_mean")`` of the
  output (``FIXED_AGGREGATION["gmpo"]``); verl's ``torch.mean`` also counts
  empty rows, which contribute 0.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    eps_low, eps_high: log-space clip range; the paper's (and verl GMPO
      recipe's) 0.4 / 0.4, i.e. ratios in ``(e^-0.4, e^0.4)``.

  Returns:
    ``(loss_BxGxT, metrics)``: ``clipfrac_high`` (A > 0, d > eps_high),
    ``clipfrac_low`` (A < 0, d < -eps_low), ``approx_kl``, ``ratio_mean``
    (token-weighted mean of ``rho_i``).
  """
  what = "gmpo"
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  sgn = jnp.sign(inp.adv)
  d_clip = jnp.clip(d, -eps_low, eps_high)
  d_tilde = sgn * jnp.minimum(sgn * d, sgn * d_clip)
  rho = jnp.exp(_common.seq_mean(d_tilde, inp.mask))
  seq_adv = _common.seq_mean(inp.adv, inp.mask)
  loss = -seq_adv * rho
  return _finish(inp, loss[..., None], _metrics(
      inp, clipfrac_high=(inp.adv > 0) & (d > eps_high),
      clipfrac_low=(inp.adv < 0) & (d < -eps_low), approx_kl=-d,
      ratio_mean=rho[..., None]))


# ---------------------------------------------------------------------------
# REINFORCE family.


def reinforce(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike | None,
              adv: ArrayLike, mask_BxGxT: ArrayLike, *,
              is_threshold: float | None = None
              ) -> tuple[jax.Array, Metrics]:
  """Plain policy gradient ``-w * A * logp`` (no ratio, no clip).

  One per-token loss serves several published forms, which differ only in
  the advantage and the aggregation chosen by the caller:

  * GPG (Chu et al., arXiv 2504.02546; verl ``loss_mode="gpg"``):
    ``-A logp`` with the GPG advantage, any aggregation mode.
  * AAPO (Xiong et al., arXiv 2505.14264): the cross-entropy form
    ``-sum logp * A^ * m / sum m`` with the momentum-augmented advantage
    ``A^ = A + M`` (computed by the advantage transform): ``token_mean``.
  * Aryabhata 1.0 (arXiv 2508.08665), A2C objective with a group-relative
    advantage: ``-sum_t A_i log pi(y_t)`` [reading: the source is a
    summary]; the token sum per sequence is ``seq_mean_token_sum``.
  * verl bypass mode with ``loss_type=reinforce``: pass the rollout
    (inference-engine) log-probs as ``old_logp_BxGxT`` and set
    ``is_threshold``: ``w = sg(min(pi / pi_rollout, is_threshold))``, the
    truncated importance weight (verl ``rollout_is_threshold`` 2.0).

  Args:
    logp_BxGxT: current log-probs, ``[B, G, T]``.
    old_logp_BxGxT: rollout / behaviour log-probs ``[B, G, T]``; used only
      for the importance weight and the KL metrics; may be None when
      ``is_threshold`` is None.
    adv: ``adv_BxG`` or ``adv_BxGxT``.
    mask_BxGxT: bool, valid tokens.
    is_threshold: None (default, w = 1) or the truncation level of the
      importance weight.

  Returns:
    ``(loss_BxGxT, metrics)``: ``logp_mean``; with ``old_logp_BxGxT`` also
    ``approx_kl``, ``approx_kl_k3``, ``ratio_mean``; with ``is_threshold``
    also ``is_weight_mean`` and ``is_truncfrac``.
  """
  what = "reinforce"
  if is_threshold is not None and old_logp_BxGxT is None:
    raise ValueError(
        "reinforce: is_threshold needs old_logp_BxGxT (the rollout "
        "log-probs of verl's bypass mode).")
  _check_positive(what, is_threshold=is_threshold)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  values = {"logp_mean": inp.logp}
  w = 1.0
  if inp.old_logp is not None:
    d = _log_ratio(inp)
    ratio = jnp.exp(d)
    values.update(_kl_metrics(d, ratio))
    if is_threshold is not None:
      w = jax.lax.stop_gradient(jnp.minimum(ratio, is_threshold))
      values.update(is_weight_mean=w, is_truncfrac=ratio > is_threshold)
  loss = -w * inp.adv * inp.logp
  return _finish(inp, loss, _metrics(inp, **values))


# ---------------------------------------------------------------------------
# Clip-Cov and KL-Cov.


def _ranks(x: jax.Array) -> jax.Array:
  """Rank of every element of ``x`` in ascending order (ties by position)."""
  flat = x.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(
      jnp.arange(flat.size, dtype=jnp.int32))
  return ranks.reshape(x.shape)


def _token_cov(inp: _Inputs) -> jax.Array:
  """``(A - mean A)(logp - mean logp)`` over the valid tokens, no gradient."""
  m = inp.mask.astype(inp.dtype)
  n = jnp.maximum(jnp.sum(m), 1)
  logp = jax.lax.stop_gradient(inp.logp)
  adv = jax.lax.stop_gradient(inp.adv)
  mean_a = jnp.sum(adv * m) / n
  mean_l = jnp.sum(logp * m) / n
  return jnp.where(inp.mask, (adv - mean_a) * (logp - mean_l), 0)


def _count(inp: _Inputs, ratio) -> jax.Array:
  """``max(floor(ratio * N_tok), 1)`` as int32."""
  n_tok = jnp.sum(inp.mask).astype(jnp.float32)
  k = jnp.floor(jnp.asarray(ratio, jnp.float32) * n_tok)
  return jnp.maximum(k, 1).astype(jnp.int32)


def clip_cov(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
             mask_BxGxT: ArrayLike, *, key: jax.Array | None = None,
             eps_low: float = 0.2, eps_high: float = 0.2,
             clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0,
             clip_cov_ub: float = 5.0) -> tuple[jax.Array, Metrics]:
  """Clip-Cov: PPO clip, minus a random few high-covariance tokens.

  See Cui et al., The Entropy Mechanism of RL for Reasoning LMs (arXiv
  2505.22617); verl ``loss_mode="clip_cov"``. The loss is verl's PPO clip
  ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` (no dual clip) times
  ``corr`` in {0, 1}: with ``cov_t = (A_t - mean A)(logp_t - mean logp)``
  over the valid tokens of the batch passed in, the tokens not already
  clipped by PPO with ``clip_cov_lb < cov < clip_cov_ub`` are candidates,
  and ``k = max(floor(clip_cov_ratio * N_tok), 1)`` of them (all if fewer)
  are drawn uniformly at random with ``key`` and get ``corr = 0`` (value
  and gradient 0). ``aggregate`` modes all apply.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    key: a ``jax.random`` key (required); the result is a deterministic
      function of it.
    eps_low, eps_high: PPO clip range.
    clip_cov_ratio: fraction of valid tokens to detach (verl 2e-4).
    clip_cov_lb, clip_cov_ub: covariance window (verl 1 and 5).

  Returns:
    ``(loss_BxGxT, metrics)``: ``covfrac`` (detached tokens; verl reports
    this as ``pg_clipfrac``), ``clipfrac`` (PPO clipping), ``clipfrac_high``,
    ``clipfrac_low``, ``cov_mean``, ``approx_kl``, ``approx_kl_k3``,
    ``ratio_mean``.
  """
  what = "clip_cov"
  if key is None:
    raise ValueError("clip_cov: key is required: a jax.random key for the "
                     "random choice of detached tokens.")
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high,
                clip_cov_ratio=clip_cov_ratio)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  ratio = jnp.exp(d)
  loss, ind = _ppo_terms(ratio, inp.adv, eps_low, eps_high)
  del ind["dual_clipfrac"]
  cov = _token_cov(inp)
  candidate = (inp.mask & ~ind["clipfrac"] & (cov > clip_cov_lb)
               & (cov < clip_cov_ub))
  u = jax.random.uniform(key, inp.mask.shape, jnp.float32)
  rank = _ranks(jnp.where(candidate, u, 2.0))  # candidates come first
  chosen = candidate & (rank < _count(inp, clip_cov_ratio))
  loss = jnp.where(chosen, 0, loss)
  return _finish(inp, loss, _metrics(inp, covfrac=chosen, cov_mean=cov,
                                     **ind, **_kl_metrics(d, ratio)))


def kl_cov(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
           mask_BxGxT: ArrayLike, *, kl_cov_ratio: float = 2e-4,
           ppo_kl_coef: float = 0.1) -> tuple[jax.Array, Metrics]:
  """KL-Cov: unclipped ``-A r``, plus ``|logp - old_logp|`` on top-cov tokens.

  See Cui et al. (arXiv 2505.22617); verl ``loss_mode="kl_cov"``. Every
  token gets ``-A r`` with **no PPO clipping**; the
  ``k = max(floor(kl_cov_ratio * N_tok), 1)`` valid tokens with the largest
  ``cov_t = (A_t - mean A)(logp_t - mean logp)`` (over the valid tokens of
  the batch passed in; ties go to the earlier position) get
  ``+ ppo_kl_coef * |logp - old_logp|``. ``aggregate`` modes all apply.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    kl_cov_ratio: fraction of valid tokens penalised (verl 2e-4).
    ppo_kl_coef: penalty coefficient (verl yaml 0.1).

  Returns:
    ``(loss_BxGxT, metrics)``: ``covfrac`` (penalised tokens),
    ``abs_kl`` (mean ``|delta|``, verl ``ppo_kl_abs``), ``cov_mean``,
    ``approx_kl``, ``approx_kl_k3``, ``ratio_mean``.
  """
  what = "kl_cov"
  _check_nonneg(what, kl_cov_ratio=kl_cov_ratio, ppo_kl_coef=ppo_kl_coef)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  raw = inp.logp - inp.old_logp
  d = _log_ratio(inp)
  ratio = jnp.exp(d)
  cov = _token_cov(inp)
  rank = _ranks(jnp.where(inp.mask, -cov, jnp.inf))  # largest cov first
  chosen = inp.mask & (rank < _count(inp, kl_cov_ratio))
  loss = -inp.adv * ratio + jnp.where(chosen, ppo_kl_coef * jnp.abs(raw), 0)
  return _finish(inp, loss, _metrics(inp, covfrac=chosen, abs_kl=jnp.abs(raw),
                                     cov_mean=cov,
                                     **_kl_metrics(d, ratio)))


# ---------------------------------------------------------------------------
# VESPO.


def vespo(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike, adv: ArrayLike,
          mask_BxGxT: ArrayLike, *, k_pos: float = 2.0,
          lambda_pos: float = 3.0, k_neg: float = 3.0,
          lambda_neg: float = 2.0) -> tuple[jax.Array, Metrics]:
  """VESPO: REINFORCE weighted by a detached gamma kernel of the seq. ratio.

  See Shen et al., VESPO (arXiv 2602.10693); TRL ``loss_type="vespo"``.
  ``W = exp(clamp(sum_t clamp(d_t, -20, 20) m_t, log 1e-8, 20))`` is the
  sequence importance weight (the full product, no length normalisation),
  ``phi(W) = e^lam W^k e^(-lam W)`` (so ``phi(1) = 1``), computed in log
  space and detached; ``(k, lam)`` are ``(k_pos, lambda_pos)`` where
  A >= 0, else ``(k_neg, lambda_neg)`` (chosen per token when ``adv`` is
  per token); ``lam`` is floored at 1e-4; a non-finite ``phi`` becomes 0.
  ``loss = -phi * A * logp``. TRL aggregates it like ``dapo``
  (``token_mean``).

  TRL folds the vLLM importance ratio ``exp(old - sampling)`` into ``W``;
  here that is obtained by passing the sampling log-probs as
  ``old_logp_BxGxT`` (without TRL's separate clamp of that ratio).

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    k_pos, lambda_pos: kernel shape / rate for A >= 0 (TRL 2, 3).
    k_neg, lambda_neg: kernel shape / rate for A < 0 (TRL 3, 2).

  Returns:
    ``(loss_BxGxT, metrics)``: ``phi_mean``, ``seq_weight_mean`` (W,
    token-weighted), ``approx_kl``, ``approx_kl_k3``, ``ratio_mean``.
  """
  what = "vespo"
  _check_nonneg(what, k_pos=k_pos, k_neg=k_neg, lambda_pos=lambda_pos,
                lambda_neg=lambda_neg)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT)
  d = _log_ratio(inp)
  log_w = jnp.clip(jnp.sum(jax.lax.stop_gradient(d), axis=-1),
                   jnp.log(1e-8), 20.0)[..., None]
  w = jnp.exp(log_w)
  nonneg = inp.adv >= 0
  k = jnp.where(nonneg, k_pos, k_neg).astype(inp.dtype)
  lam = jnp.maximum(jnp.where(nonneg, lambda_pos, lambda_neg),
                    1e-4).astype(inp.dtype)
  phi = jnp.exp(lam + k * log_w - lam * w)
  phi = jax.lax.stop_gradient(
      jnp.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0))
  loss = -phi * inp.adv * inp.logp
  return _finish(inp, loss, _metrics(inp, phi_mean=phi, seq_weight_mean=w,
                                     **_kl_metrics(d, jnp.exp(d))))


# ---------------------------------------------------------------------------
# HAPO.

HAPO_NEG_SCALES = ("described", "code")


class HapoEntropyStats(NamedTuple):
  """The normalisation HAPO saves for its adaptive-temperature sampler."""

  pivot_value: jax.Array  # shape=(); c, the pivot quantile of log H
  std: jax.Array  # shape=(); RMS of log H about c (floored variance)
  scale_pos: jax.Array  # shape=(); 1 / max(h+)
  scale_neg: jax.Array  # shape=(); 1/|min(h-)| ("described") or 1/min(h-)


def hapo_entropy_scale(entropy_BxGxT: ArrayLike, mask_BxGxT: ArrayLike, *,
                       pivot: float = 0.8, neg_scale: str = "described",
                       eps: float = 1e-8, return_stats: bool = False):
  """HAPO's normalised token entropy ``h^`` (``compute_entropy_h``).

  See Liu et al., HAPO (arXiv 2509.16591), ``reference/estimators.md``
  §2.22. Over the valid tokens of the batch passed in:
  ``l = log(max(H, eps))``; ``c`` = the ``pivot`` quantile of ``l`` with
  "nearest" interpolation (index ``round(pivot (n - 1))``, ties to even, as
  Python's ``round``); ``h = (l - c) / sqrt(max(mean((l - c)^2), eps))``;
  then positive values are divided by ``max(h+)`` and non-positive ones by
  the magnitude of ``min(h-)`` (each floored at ``eps``).

  ``neg_scale`` chooses the negative side:

  * ``"described"`` (default): ``h / |min(h-)|``, so ``h^`` is in [-1, 1]
    as the paper describes.
  * ``"code"``: the released code (7671dde) divides by ``min(h-)`` itself,
    which is negative, so ``h^ >= 0`` everywhere (the lowest-entropy token
    gets 1) and HAPO's "low-entropy" branches fire only where ``h^ = 0``.

  The result carries no gradient (HAPO computes it under ``no_grad``).

  Args:
    entropy_BxGxT: per-token entropy of the full next-token distribution,
      ``[B, G, T]``.
    mask_BxGxT: bool, valid tokens.
    pivot: the quantile used as the centre (HAPO recipes 0.8).
    neg_scale: ``"described"`` or ``"code"``, see above.
    eps: floor of H, of the variance and of the scales (HAPO 1e-8).
    return_stats: also return a ``HapoEntropyStats``.

  Returns:
    ``h_hat_BxGxT`` (0 at masked tokens), or ``(h_hat_BxGxT, stats)``.
  """
  what = "hapo_entropy_scale"
  _checks.check_choice("neg_scale", neg_scale, HAPO_NEG_SCALES, what=what)
  if _checks.is_concrete(pivot) and not 0 <= float(pivot) <= 1:
    raise ValueError(f"{what}: pivot must be in [0, 1], got {pivot!r}.")
  _common.check_tokens(what, mask_BxGxT, entropy_BxGxT=entropy_BxGxT)
  mask = jnp.asarray(mask_BxGxT)
  ent = jax.lax.stop_gradient(jnp.asarray(entropy_BxGxT))
  dtype = ent.dtype
  ent = jnp.where(mask, ent, 1)
  logh = jnp.log(jnp.maximum(ent, eps))
  n = jnp.sum(mask)
  ordered = jnp.sort(jnp.where(mask, logh, jnp.inf).reshape(-1))
  pos = jnp.asarray(pivot, dtype) * (jnp.maximum(n, 1) - 1).astype(dtype)
  idx = jnp.clip(jnp.round(pos).astype(jnp.int32), 0, ordered.size - 1)
  c = jnp.where(n > 0, ordered[idx], 0).astype(dtype)
  h = jnp.where(mask, logh - c, 0)
  var = jnp.sum(h * h) / jnp.maximum(n, 1).astype(dtype)
  std = jnp.sqrt(jnp.maximum(var, eps))
  h = h / std
  pos_max = jnp.maximum(jnp.max(jnp.where(mask & (h > 0), h, 0)), eps)
  neg_min = jnp.minimum(jnp.min(jnp.where(mask & (h < 0), h, 0)), -eps)
  scale_pos = 1 / pos_max
  scale_neg = 1 / (-neg_min if neg_scale == "described" else neg_min)
  h_hat = jnp.where(h > 0, h * scale_pos, h * scale_neg)
  h_hat = jnp.where(mask, h_hat, 0).astype(dtype)
  if return_stats:
    return h_hat, HapoEntropyStats(c, std, scale_pos, scale_neg)
  return h_hat


def hapo_clip(logp_BxGxT: ArrayLike, old_logp_BxGxT: ArrayLike,
              adv: ArrayLike, mask_BxGxT: ArrayLike, *,
              entropy_BxGxT: ArrayLike | None = None,
              h_hat_BxGxT: ArrayLike | None = None,
              pivot: float = 0.8, neg_scale: str = "described",
              eps_low: float = 0.2, eps_high: float = 0.2,
              adaptive_clip: bool = True, clip_alpha: float = 1.0,
              redistribute_adv: bool = True, adv_beta: float = 1.0,
              clip_ratio_c: float | None = 10.0,
              log_ratio_clamp: float | None = LOG_RATIO_CLAMP
              ) -> tuple[jax.Array, Metrics]:
  """HAPO's PPO clip: entropy-adaptive bounds and advantage redistribution.

  See Liu et al., HAPO (arXiv 2509.16591), ``reference/estimators.md``
  §2.22 (code ``compute_policy_loss``, ``ada_clip``, ``ada_advantage`` at
  7671dde). With ``h^`` from ``hapo_entropy_scale`` (or given):

  * Asymmetric Adaptive Clipping (``adaptive_clip``): where ``h^ > 0``,
    ``eps_high <- eps_high (1 + clip_alpha h^)``; where ``h^ <= 0``,
    ``eps_low <- eps_low (1 - clip_alpha h^)`` (a wider lower bound).
  * Differential Advantage Redistribution (``redistribute_adv``):
    ``A_ent = A (1 + adv_beta h^)``; the neutral zone is
    ``1 - eps_low/2 < r < 1 + eps_high/2`` with the bounds after adaptation
    (as the code does); high-entropy tokens (``h^ > 0``) use A inside the
    zone and ``A_ent`` outside, the others ``A_ent`` inside and A outside.
  * Then verl's PPO clip with the per-token bounds and the dual clip
    ``clip_ratio_c`` (HAPO 10) for A < 0.

  Args:
    logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT: as in ``ppo_clip``.
    entropy_BxGxT: per-token entropy; ``h^`` is then normalised over the
      valid tokens of the batch passed in, as HAPO's loss does.
    h_hat_BxGxT: a precomputed ``h^`` instead (e.g. over the whole batch).
      Exactly one of ``entropy_BxGxT`` and ``h_hat_BxGxT`` is required.
    pivot, neg_scale: passed to ``hapo_entropy_scale`` (0.8, "described").
    eps_low, eps_high: base clip ranges (HAPO 0.2 / 0.2).
    adaptive_clip: apply the adaptive bounds (HAPO ``adaptive_clip``).
    clip_alpha: alpha of the adaptive bounds (HAPO 1).
    redistribute_adv: apply the advantage redistribution (HAPO
      ``adaptive_advantage``).
    adv_beta: beta of the redistribution (HAPO 1).
    clip_ratio_c: dual-clip bound (> 1, HAPO 10); None disables it.
    log_ratio_clamp: clamp of ``logp - old_logp`` before ``exp`` (HAPO's
      code has none; 20 changes nothing in the normal range).

  Returns:
    ``(loss_BxGxT, metrics)``: ``clipfrac``, ``clipfrac_high``,
    ``clipfrac_low``, ``dual_clipfrac`` (as in ``ppo_clip``), ``h_hat_mean``,
    ``eps_low_mean``, ``eps_high_mean``, ``adv_ent_frac`` (tokens that use
    ``A_ent``), ``approx_kl``, ``approx_kl_k3``, ``ratio_mean``.
  """
  what = "hapo_clip"
  if (entropy_BxGxT is None) == (h_hat_BxGxT is None):
    raise ValueError(
        "hapo_clip: pass exactly one of entropy_BxGxT (h^ is normalised "
        "here) and h_hat_BxGxT (from hapo_entropy_scale).")
  _check_nonneg(what, eps_low=eps_low, eps_high=eps_high,
                clip_alpha=clip_alpha, adv_beta=adv_beta)
  _check_positive(what, log_ratio_clamp=log_ratio_clamp)
  _check_dual_clip(what, clip_ratio_c)
  inp = _prepare(what, logp_BxGxT, old_logp_BxGxT, adv, mask_BxGxT,
                 entropy_BxGxT=entropy_BxGxT, h_hat_BxGxT=h_hat_BxGxT)
  if h_hat_BxGxT is None:
    h_hat = hapo_entropy_scale(entropy_BxGxT, inp.mask, pivot=pivot,
                               neg_scale=neg_scale)
  else:
    h_hat = jnp.asarray(h_hat_BxGxT)
  h_hat = jax.lax.stop_gradient(jnp.where(inp.mask, h_hat, 0)).astype(
      inp.dtype)
  high_ent = h_hat > 0
  low = jnp.full(h_hat.shape, eps_low, inp.dtype)
  high = jnp.full(h_hat.shape, eps_high, inp.dtype)
  if adaptive_clip:
    low = jnp.where(high_ent, low, low * (1 - clip_alpha * h_hat))
    high = jnp.where(high_ent, high * (1 + clip_alpha * h_hat), high)
  d = _log_ratio(inp, log_ratio_clamp)
  ratio = jnp.exp(d)
  a = inp.adv
  use_ent = jnp.zeros(h_hat.shape, bool)
  if redistribute_adv:
    r = jax.lax.stop_gradient(ratio)
    inside = (r > 1 - low / 2) & (r < 1 + high / 2)
    use_ent = jnp.where(high_ent, ~inside, inside)
    a = jnp.where(use_ent, a * (1 + adv_beta * h_hat), a)
  loss, ind = _ppo_terms(ratio, a, low, high, clip_ratio_c=clip_ratio_c)
  return _finish(inp, loss, _metrics(
      inp, **ind, h_hat_mean=h_hat, eps_low_mean=low, eps_high_mean=high,
      adv_ent_frac=use_ent, **_kl_metrics(d, ratio)))


# ---------------------------------------------------------------------------
# Registries.

SURROGATES: dict[str, Callable[..., tuple[jax.Array, Metrics]]] = {
    "ppo_clip": ppo_clip,
    "gspo": gspo,
    "gspo_token": gspo_token,
    "cispo": cispo,
    "sapo": sapo,
    "gmpo": gmpo,
    "reinforce": reinforce,
    "clip_cov": clip_cov,
    "kl_cov": kl_cov,
    "vespo": vespo,
    "luspo": luspo,
    "hapo_clip": hapo_clip,
}

# Losses whose paper (or peer implementation) fixes the aggregation; the
# composer rejects any other mode for them (never a silent override).
# gspo / gspo_token: the paper's (1/G) sum_i over sequences; verl forces
# seq-mean-token-mean. sapo: verl forces it, TRL aggregates sapo like grpo.
# gmpo: verl's plain mean over sequences. luspo: mean_i(l_i |o_i|).
FIXED_AGGREGATION: dict[str, str] = {
    "gspo": "seq_mean_token_mean",
    "gspo_token": "seq_mean_token_mean",
    "sapo": "seq_mean_token_mean",
    "gmpo": "seq_mean_token_mean",
    "luspo": "seq_mean_token_sum",
}
