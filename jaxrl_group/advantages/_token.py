"""Token-level estimators: advantages of shape ``[B, G, T]``.

The outcome reward of a sample sits on its last valid token; an optional
per-token KL estimate (``kl_BxGxT`` in ctx) is folded into the token rewards
as ``-kl_coef * kl``. Returns are computed with an associative scan (log-depth)
or a ``lax.scan`` over T, never a Python loop.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import optional
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._group import whiten
from jaxrl_group.advantages._registry import register

_TOKENS = ("token_mask_BxGxT",)


def _token_inputs(what, rewards_BxG, mask_BxG, ctx, *, min_group_size=1):
  r, mask, sizes = prepare(what, rewards_BxG, mask_BxG,
                           min_group_size=min_group_size)
  token_mask = require(what, ctx, "token_mask_BxGxT", sizes)
  _checks.check_bool("token_mask_BxGxT", token_mask, what=what)
  return r, mask, token_mask & mask[..., None], sizes


def last_token_onehot(token_mask_BxGxT: jax.Array) -> jax.Array:
  """One-hot of each row's last valid token (all False for an empty row)."""
  t = token_mask_BxGxT.shape[-1]
  idx = jnp.arange(t)[None, None, :]
  last = jnp.max(jnp.where(token_mask_BxGxT, idx, -1), axis=-1, keepdims=True)
  return idx == last


def token_rewards(what, r_BxG, valid_BxGxT, ctx, sizes, kl_coef):
  """Outcome reward on the last valid token, minus ``kl_coef * kl``."""
  r_tok = jnp.where(last_token_onehot(valid_BxGxT), r_BxG[..., None], 0)
  kl = optional(what, ctx, "kl_BxGxT", sizes)
  if kl is None:
    if _checks.is_concrete(kl_coef) and kl_coef != 0:
      require(what, ctx, "kl_BxGxT", sizes)  # raises, naming the key
    return r_tok
  return r_tok - kl_coef * jnp.where(valid_BxGxT, kl, 0).astype(r_tok.dtype)


def reverse_discounted_sum(b_BxGxT: jax.Array, a_BxGxT: jax.Array) -> jax.Array:
  """Solves ``x_t = b_t + a_t * x_{t+1}`` (with ``x_T = 0``) along T.

  A log-depth ``lax.associative_scan``: the elements compose as affine maps.
  """

  def combine(later, earlier):
    a_l, b_l = later
    a_e, b_e = earlier
    return a_e * a_l, b_e + a_e * b_l

  _, x = jax.lax.associative_scan(combine, (a_BxGxT, b_BxGxT), reverse=True,
                                  axis=b_BxGxT.ndim - 1)
  return x


def returns_to_go(r_tok_BxGxT: jax.Array, valid_BxGxT: jax.Array,
                  gamma=1.0) -> jax.Array:
  """verl's masked return: ``R_t = r_t + gamma * m_{t+1} * R_{t+1}``.

  The running return is reset after every masked position, so tokens before
  a masked gap do not see rewards after it.
  """
  m_next = jnp.concatenate(
      [valid_BxGxT[..., 1:], jnp.zeros_like(valid_BxGxT[..., :1])], axis=-1)
  a = gamma * m_next.astype(r_tok_BxGxT.dtype)
  return reverse_discounted_sum(r_tok_BxGxT, a)


@register("reinforce_pp", requires=_TOKENS, token_level=True)
def reinforce_pp(*, gamma: float = 1.0, kl_coef: float = 0.0,
                 std: str = "unbiased", eps: float = 1e-8,
                 eps_placement: str = "var") -> AdvantageTransform:
  """REINFORCE++: token returns whitened over all valid tokens of the batch.

  See Hu et al., "REINFORCE++" (arXiv 2501.03262); verl
  ``reinforce_plus_plus``. Token rewards are the outcome reward on the last
  valid token minus ``kl_coef * kl_BxGxT``; ``R_t = r_t + gamma R_{t+1}``;
  ``A = (R - mean) / sqrt(var_unbiased + 1e-8)`` over the batch's valid tokens.
  No group baseline.

  Args:
    gamma: discount (paper: 1).
    kl_coef: the KL-in-reward coefficient beta, applied to ``kl_BxGxT`` from
      ctx (for example ``old_logp - ref_logp``, k1); a non-zero value
      without ``kl_BxGxT`` raises.
    std: std type of the whitening.
    eps: whitening eps (1e-8).
    eps_placement: ``"var"`` (verl) or ``"std"``.

  Returns:
    A stateless ``AdvantageTransform``; needs ``token_mask_BxGxT`` and
    returns ``[B, G, T]``.
  """
  _stats.check_conventions("reinforce_pp", std=std, eps=eps,
                           eps_placement=eps_placement)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, _, valid, sizes = _token_inputs("reinforce_pp", rewards_BxG, mask_BxG,
                                       ctx)
    r_tok = token_rewards("reinforce_pp", r, valid, ctx, sizes, kl_coef)
    ret = returns_to_go(r_tok, valid, gamma)
    return whiten(ret, valid, std=std, eps=eps, eps_placement=eps_placement)

  return stateless(update_fn)


@register("reinforce_pp_baseline", min_group_size=2, requires=_TOKENS,
          token_level=True)
def reinforce_pp_baseline(*, std: str = "unbiased", eps: float = 1e-8,
                          eps_placement: str = "var",
                          singleton: str = "zero") -> AdvantageTransform:
  """REINFORCE++-baseline: group-mean baseline, then batch token whitening.

  See Hu et al., "REINFORCE++" (arXiv 2501.03262); verl
  ``reinforce_plus_plus_baseline``. ``a_i = r_i - mean_g`` is copied to the
  valid tokens and whitened over all valid tokens of the batch. An all-equal
  group is therefore not 0 but ``-mean_batch / std_batch``.

  Args:
    std: std type of the whitening.
    eps: whitening eps.
    eps_placement: ``"var"`` (verl) or ``"std"``.
    singleton: a one-sample group gives 0 and stays out of the whitening
      statistics (``"zero"``), or keeps its raw reward (``"raw"``, verl).

  Returns:
    A stateless ``AdvantageTransform``; needs ``token_mask_BxGxT`` and
    returns ``[B, G, T]``.
  """
  _stats.check_conventions("reinforce_pp_baseline", std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, valid, _ = _token_inputs("reinforce_pp_baseline", rewards_BxG,
                                      mask_BxG, ctx, min_group_size=2)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    if singleton == "zero":
      valid = valid & (st.count > 1)[..., None]
    a = jnp.broadcast_to(st.centered[..., None], valid.shape)
    return whiten(a, valid, std=std, eps=eps, eps_placement=eps_placement)

  return stateless(update_fn)


@register("optimal_token_baseline", min_group_size=2,
          requires=_TOKENS + ("old_logp_BxGxT", "sum_pi_sq_BxGxT"),
          token_level=True)
def optimal_token_baseline(*, eps: float = 1e-8, kl_coef: float = 0.0,
                           handle_zero_tail: bool = False,
                           singleton: str = "zero") -> AdvantageTransform:
  """Optimal token baseline (OTB): a variance-weighted per-position baseline.

  verl ``optimal_token_baseline``. With returns ``R_t`` (reverse sum of the
  token rewards), ``pi_t = exp(old_logp_t)`` and ``w_t = 1 - 2 pi_t +
  sum_v pi_v^2`` (times the squared rollout importance weight when
  ``is_weights_BxGxT`` is given), ``W_t = sum_{j<=t} w_j m_j`` and, per group
  and absolute position t, ``b_t = sum_i R W m / (sum_i W m + eps)``;
  ``A_t = (R_t - b_t) m_t``.

  Args:
    eps: the baseline's denominator eps (verl: 1e-8).
    kl_coef: KL-in-reward coefficient; non-zero requires ``kl_BxGxT``.
    handle_zero_tail: if one sample of a group is strictly the longest, its
      baseline beyond the second-longest sample's last token is 0 (there the
      formula's baseline is the sample's own return, giving no signal).
      verl's default is True (``preset="verl"``); the formula alone, False.
    singleton: a one-sample group gives 0 (``"zero"``) or its return
      (``"raw"``, verl: baseline 0).

  Returns:
    A stateless ``AdvantageTransform``; needs ``token_mask_BxGxT``,
    ``old_logp_BxGxT`` and ``sum_pi_sq_BxGxT``; returns ``[B, G, T]``.
  """
  _stats.check_conventions("optimal_token_baseline", eps=eps,
                           singleton=singleton)
  what = "optimal_token_baseline"

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, valid, sizes = _token_inputs(what, rewards_BxG, mask_BxG, ctx,
                                          min_group_size=2)
    old_logp = require(what, ctx, "old_logp_BxGxT", sizes).astype(r.dtype)
    sum_pi_sq = require(what, ctx, "sum_pi_sq_BxGxT", sizes).astype(r.dtype)
    is_w = optional(what, ctx, "is_weights_BxGxT", sizes)
    r_tok = token_rewards(what, r, valid, ctx, sizes, kl_coef)
    # verl: a plain reverse cumulative sum of r_tok * m (r_tok is already 0
    # off the valid tokens). Unlike returns_to_go it does not reset at
    # interior gaps, so tokens before a gap still see the outcome reward.
    ret = jax.lax.cumsum(r_tok, axis=r_tok.ndim - 1, reverse=True)
    w = 1 - 2 * jnp.exp(old_logp) + sum_pi_sq
    if is_w is not None:
      w = w * jnp.square(is_w.astype(r.dtype))
    m = valid.astype(r.dtype)
    cum_w = jnp.cumsum(w * m, axis=-1) * m
    num = jnp.sum(ret * cum_w, axis=1, keepdims=True)
    den = jnp.sum(cum_w, axis=1, keepdims=True)
    base = num / (den + eps)
    if handle_zero_tail:
      idx = jnp.arange(sizes["T"])[None, None, :]
      last = jnp.max(jnp.where(valid, idx, -1), axis=-1)
      top2, _ = jax.lax.top_k(last, 2)
      tail = ((top2[:, 0] > top2[:, 1])[:, None, None]
              & (idx > top2[:, 1][:, None, None]))
      base = jnp.where(tail, 0, base)
    st = _stats.group_stats(r, mask)
    if singleton == "raw":
      base = jnp.where((st.count == 1)[..., None], 0, base)
    return _stats.finish((ret - base) * m, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("gae", requires=_TOKENS + ("values_BxGxT",), token_level=True)
def gae(*, gamma: float = 1.0, lam: float = 1.0, kl_coef: float = 0.0,
        whiten_advantages: bool = True, std: str = "unbiased",
        eps: float = 1e-8, eps_placement: str = "var") -> AdvantageTransform:
  """Generalized advantage estimation with a critic, whitened over the batch.

  See Schulman et al., "High-Dimensional Continuous Control Using
  Generalized Advantage Estimation" (arXiv 1506.02438); verl ``gae``.
  ``delta_t = r_t + gamma V_{t+1} - V_t``, ``A_t = delta_t + gamma lam
  A_{t+1}``. At masked positions (for example tool-output tokens between
  turns) the next value and the running advantage are carried through
  unchanged, so those positions are skipped. Then ``A`` is whitened over the
  valid tokens of the batch (verl), unless ``whiten_advantages=False``.

  Args:
    gamma: discount.
    lam: GAE lambda.
    kl_coef: KL-in-reward coefficient; non-zero requires ``kl_BxGxT``.
    whiten_advantages: whiten over valid tokens (verl does).
    std: std type of the whitening.
    eps: whitening eps.
    eps_placement: ``"var"`` (verl) or ``"std"``.

  Returns:
    A stateless ``AdvantageTransform``; needs ``token_mask_BxGxT`` and
    ``values_BxGxT``; returns ``[B, G, T]``.
  """
  _stats.check_conventions("gae", std=std, eps=eps,
                           eps_placement=eps_placement)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, _, valid, sizes = _token_inputs("gae", rewards_BxG, mask_BxG, ctx)
    values = require("gae", ctx, "values_BxGxT", sizes).astype(r.dtype)
    r_tok = token_rewards("gae", r, valid, ctx, sizes, kl_coef)
    m = valid.astype(r.dtype)

    def step(carry, xs):
      next_value, last_adv = carry
      r_t, v_t, m_t = xs
      delta = r_t + gamma * next_value - v_t
      adv = delta + gamma * lam * last_adv
      next_value = v_t * m_t + (1 - m_t) * next_value
      last_adv = adv * m_t + (1 - m_t) * last_adv
      return (next_value, last_adv), last_adv

    zeros = jnp.zeros_like(r)  # keeps r's sharding type (explicit meshes)
    xs = tuple(jnp.moveaxis(x, -1, 0) for x in (r_tok, values, m))
    _, adv_TxBxG = jax.lax.scan(step, (zeros, zeros), xs, reverse=True)
    adv = jnp.moveaxis(adv_TxBxG, 0, -1)
    if whiten_advantages:
      return whiten(adv, valid, std=std, eps=eps, eps_placement=eps_placement)
    return jnp.where(valid, adv, 0).astype(r.dtype)

  return stateless(update_fn)
