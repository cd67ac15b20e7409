"""OBLR-PO baseline: the gradient-weighted (variance-optimal) group baseline.

See Huang, Sheng and Zheng, OBLR-PO (arXiv 2511.23310); the project's
estimator reference, §2.15 and §1.10 (the OTB weight).
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
from jaxrl_group.advantages._registry import register

_TOKEN_KEYS = ("token_mask_BxGxT", "old_logp_BxGxT", "sum_pi_sq_BxGxT")


def score_norm_proxy(token_mask_BxGxT: jax.Array, old_logp_BxGxT: jax.Array,
                     sum_pi_sq_BxGxT: jax.Array,
                     is_weights_BxGxT: jax.Array | None = None, *,
                     clamp: bool = True) -> jax.Array:
  """Per-sample proxy of the squared score norm ``||grad log pi(o_i)||^2``.

  ``W_i = sum_t m_t w_t`` with ``w_t = 1 - 2 pi_t + sum_v pi_v^2`` and
  ``pi_t = exp(old_logp_t)``: the squared norm of the logit-space gradient
  of ``log pi(y_t)``, ``||e_y - pi||^2`` (cross-token terms dropped). This is
  the weight of verl's optimal token baseline; ``is_weights_BxGxT`` multiplies
  ``w_t`` by the squared rollout importance weight.

  Args:
    token_mask_BxGxT: bool, valid tokens.
    old_logp_BxGxT: log-probabilities of the sampled tokens.
    sum_pi_sq_BxGxT: ``sum_v pi_v^2`` per token.
    is_weights_BxGxT: optional rollout importance weights.
    clamp: floor ``w_t`` at 0. The exact value is ``>= (1 - pi_t)^2 >= 0``,
      so only inconsistent inputs are changed.

  Returns:
    ``[B, G]`` weights, 0 for an empty row.
  """
  dtype = old_logp_BxGxT.dtype
  w = 1 - 2 * jnp.exp(old_logp_BxGxT) + sum_pi_sq_BxGxT.astype(dtype)
  if is_weights_BxGxT is not None:
    w = w * jnp.square(is_weights_BxGxT.astype(dtype))
  if clamp:
    w = jnp.maximum(w, 0)
  return jnp.sum(jnp.where(token_mask_BxGxT, w, 0), axis=-1)


def _weights(r, ctx, sizes, clamp):
  """The per-sample weights from ctx (see ``oblr_baseline``)."""
  what = "oblr_baseline"
  w = optional(what, ctx, "score_norm_sq_BxG", sizes)
  if w is not None:
    _checks.check_floating("score_norm_sq_BxG", w, what=what)
    w = w.astype(r.dtype)
    return jnp.maximum(w, 0) if clamp else w
  if any(ctx.get(key) is None for key in _TOKEN_KEYS):
    require(what, ctx, "score_norm_sq_BxG", sizes)  # raises, naming the key
  tm = require(what, ctx, "token_mask_BxGxT", sizes)
  _checks.check_bool("token_mask_BxGxT", tm, what=what)
  old_logp = require(what, ctx, "old_logp_BxGxT", sizes)
  sum_pi_sq = require(what, ctx, "sum_pi_sq_BxGxT", sizes)
  for key, x in (("old_logp_BxGxT", old_logp),
                 ("sum_pi_sq_BxGxT", sum_pi_sq)):
    _checks.check_floating(key, x, what=what)
  is_w = optional(what, ctx, "is_weights_BxGxT", sizes)
  return score_norm_proxy(tm, old_logp.astype(r.dtype), sum_pi_sq, is_w,
                          clamp=clamp)

@register("oblr_baseline", min_group_size=2, requires=("score_norm_sq_BxG",))
def oblr_baseline(*, clamp_weights: bool = True, norm_by_std: bool = False,
                  std: str = "unbiased", eps: float = 1e-6,
                  eps_placement: str = "std",
                  singleton: str = "zero") -> AdvantageTransform:
  """OBLR-PO baseline: ``A_i = r_i - sum_j W_j r_j / sum_j W_j`` per group.

  See Huang, Sheng and Zheng, OBLR-PO, Optimal Baseline and Learning-Rate
  Policy Optimization (arXiv 2511.23310). The paper's exact formulas are
  not known; this is the reference's [reading]: the classical
  variance-optimal baseline weights each sample by its squared score norm,
  ``b* = sum_i ||grad log pi(o_i)||^2 r_i / sum_i ||grad log pi(o_i)||^2``,
  with the tractable logit-space proxy ``W_i = sum_t (1 - 2 pi(y_t) +
  sum_v pi_v^2)`` (``score_norm_proxy``: the weight of verl's OTB, summed
  over the sample's valid tokens). The weights come from ctx:
  ``score_norm_sq_BxG`` if given (any per-sample proxy, e.g.
  ``score_norm_proxy(...)``), else they are computed from
  ``token_mask_BxGxT``, ``old_logp_BxGxT`` and ``sum_pi_sq_BxGxT`` (and the
  optional ``is_weights_BxGxT``); ``pi`` is then the behaviour policy's,
  which is the current one on-policy. Negative weights are floored at 0. A
  group whose weights are all 0 falls back to the plain mean (derived
  guard). The
  paper's SNR-adaptive learning rate is an optimiser concern, not part of
  this transform.

  Args:
    clamp_weights: floor the weights at 0 (per token when computed from
      the token inputs; see ``score_norm_proxy``).
    norm_by_std: also divide by the group std of the rewards (an option of
      this implementation, off by default: the reading has no std).
    std: ``"unbiased"`` or ``"population"`` (with ``norm_by_std``).
    eps: added to the std or to the variance (with ``norm_by_std``).
    eps_placement: ``"std"`` or ``"var"`` (with ``norm_by_std``).
    singleton: a group with one valid sample gives ``"zero"`` (its baseline
      is itself) or ``"raw"`` (baseline 0, std 1: ``A = r``).

  Returns:
    A stateless ``AdvantageTransform``; needs ``score_norm_sq_BxG`` in ctx,
    or all of ``token_mask_BxGxT``, ``old_logp_BxGxT`` and
    ``sum_pi_sq_BxGxT`` (``is_weights_BxGxT`` optional);
    ``update(rewards_BxG, ...)`` returns ``[B, G]``.
  """
  what = "oblr_baseline"
  _stats.check_conventions(what, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(what, rewards_BxG, mask_BxG, min_group_size=2)
    w = _weights(r, ctx, sizes, clamp_weights)
    w = jnp.where(mask, w, 0)
    total = jnp.sum(w, axis=-1, keepdims=True)
    # r - b = (r - mean) - sum W (r - mean) / sum W: centred first, so a
    # large common offset cancels before the weighted sum (float32).
    st = _stats.singleton_fix(_stats.group_stats(r, mask, std=std),
                              singleton, r)
    d = jnp.where(mask, st.centered, 0)
    shift = jnp.sum(w * d, axis=-1, keepdims=True) / jnp.where(
        total > 0, total, 1)
    one = st.count == 1
    adv = d - jnp.where((total > 0) & ~one, shift, 0)
    if norm_by_std:
      adv = _stats.divide_by_std(adv, st.std, eps=eps,
                                 eps_placement=eps_placement)
    return _stats.finish(adv, mask, st, singleton, r.dtype)

  return stateless(update_fn)
