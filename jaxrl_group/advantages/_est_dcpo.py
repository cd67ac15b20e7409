"""DCPO: GRPO mixed with a temperature-distribution ratio on correct answers.

See Li et al., "Distribution-Centric Policy Optimization" (DCPO,
arXiv 2601.12730); the project's estimator reference, §2.21. Not Dynamic
Clipping PO (arXiv 2509.02333).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import EmptyState
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import safe_increment
from jaxrl_group.advantages._outcome import grpo
from jaxrl_group.advantages._registry import register

_WHAT = "dcpo"
ZERO_ACCURACY = ("limit", "grpo")


class DcpoState(NamedTuple):
  """State of ``dcpo``: the previous step's entropy and what it implies."""

  count: jax.Array  # shape=(), dtype=jnp.int32; updates so far
  h_prev: jax.Array  # shape=(), dtype=rewards'; entropy for the next update
  temperature: jax.Array  # shape=(), dtype=rewards'; the next logp_temp pass
  alpha: jax.Array  # shape=(), dtype=rewards'; mixing weight of the last update


@register(_WHAT, min_group_size=2,
          requires=("token_mask_BxGxT", "old_logp_BxGxT", "logp_temp_BxGxT"),
          token_level=True, stateful=True)
def dcpo(*, h_base: float = 0.5, h_init: float = 0.0,
         alpha_cap: float = 0.1, correct_threshold: float = 0.05,
         temp_high: float = 1.2, temp_low: float = 0.8,
         zero_accuracy: str = "limit", update_entropy: bool = True,
         log_ratio_clamp: float | None = 20.0,
         norm_by_std: bool = True, std: str = "unbiased", eps: float = 1e-6,
         eps_placement: str = "std", std_floor: float = 0.0,
         singleton: str = "zero") -> AdvantageTransform:
  """DCPO: ``(1 - a) A_grpo + a 1[correct] pi_temp / pi_1``, a from entropy.

  See Li et al., "Distribution-Centric Policy Optimization" (arXiv
  2601.12730), code 597358816/DCPO @ 33f8073 (``ray_trainer.py::fit``,
  algorithm "DCPO"). Per token of response i::

    e_{i,t} = exp(logp_temp_{i,t} - old_logp_{i,t})   # pi_temp / pi_1
    b_i = 1[r_i > correct_threshold];  q = mean_i b_i over the batch
    a = min(|h_base - h_prev|, alpha_cap) / q;  alpha = a / (a + 1)
    A^_{i,t} = (1 - alpha) A_i + alpha b_i e_{i,t}

  ``A_i`` is the GRPO advantage of the rewards, computed here (the scores
  are needed for ``b``, so this transform takes rewards, not a previous
  transform's advantages). ``h_prev`` is the previous step's entropy, kept
  in the state, and decides the temperature of the second old-logp pass:
  ``temp_high`` if ``h_prev <= h_base``, else ``temp_low``.

  Two passes of the current (old) policy over the sampled tokens are needed:
  ``old_logp_BxGxT`` at temperature 1 (DCPO's ``old_log_probs``, also the
  ratio's denominator) and ``logp_temp_BxGxT`` at ``state.temperature``.
  So a train step reads ``state.temperature`` before the passes and calls
  ``update`` after them.

  Entropy [reading]: the authors use the previous step's actor metric
  ``actor/entropy_loss``, ``-mean(log pi(sampled token))`` over response
  tokens, measured during the actor update. Here (``update_entropy``) the
  update stores ``-mean(old_logp)`` over this batch's valid tokens, the same
  estimator under the pre-update policy (exact for the first mini-batch).
  With ``update_entropy=False`` ``h_prev`` is left alone: set it from the
  actor's metric yourself, ``state._replace(h_prev=h, temperature=t)``.

  Division hazard: q = 0 (no correct response in the batch) makes ``a``
  infinite and the authors' ``a / (a + 1)`` NaN. ``alpha`` is computed as
  ``m / (m + q)`` with ``m = min(|h_base - h_prev|, alpha_cap)``, equal for
  q > 0, and at q = 0 ``zero_accuracy`` chooses:

  * ``"limit"`` (default): the limit q -> 0+, alpha = 1 if m > 0 (then every
    advantage is 0, as b = 0), and 0 if m = 0;
  * ``"grpo"``: alpha = 0, plain GRPO.

  Args:
    h_base: the entropy target (``entropy_base``, 0.5).
    h_init: ``h_prev`` before the first update (0).
    alpha_cap: cap on ``|h_base - h_prev|`` (0.1).
    correct_threshold: a score above it is correct (0.05).
    temp_high, temp_low: the second pass's temperatures (1.2 / 0.8).
    zero_accuracy: ``"limit"`` or ``"grpo"``, see above.
    update_entropy: store this batch's entropy as the next ``h_prev``.
    log_ratio_clamp: ``logp_temp - old_logp`` is clamped to
      ``[-c, c]`` before ``exp``, so ``e`` stays finite (the authors have no
      clamp; 20 changes nothing in the normal range). None disables it.
    norm_by_std, std, eps, eps_placement, std_floor, singleton: the GRPO
      conventions (see ``grpo``; EasyR1: unbiased std, eps 1e-6).

  Returns:
    A stateful ``AdvantageTransform`` with ``DcpoState``; ``update(
    rewards_BxG, state, *, mask_BxG, token_mask_BxGxT, old_logp_BxGxT,
    logp_temp_BxGxT)`` returns ``[B, G, T]`` (0 at invalid tokens). ctx:
    ``token_mask_BxGxT``, ``old_logp_BxGxT`` (temperature 1) and
    ``logp_temp_BxGxT`` (temperature ``state.temperature``).
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  _checks.check_choice("zero_accuracy", zero_accuracy, ZERO_ACCURACY,
                       what=_WHAT)
  _checks.check_nonnegative("alpha_cap", alpha_cap, what=_WHAT)
  if log_ratio_clamp is not None:
    _checks.check_nonnegative("log_ratio_clamp", log_ratio_clamp, what=_WHAT)
  base = grpo(norm_by_std=norm_by_std, std=std, eps=eps,
              eps_placement=eps_placement, std_floor=std_floor,
              singleton=singleton)

  def temperature_of(h, dtype):
    return jnp.where(h <= h_base, temp_high, temp_low).astype(dtype)

  def init_fn(rewards_BxG):
    dtype = jax.dtypes.canonicalize_dtype(rewards_BxG.dtype)
    h = jnp.asarray(h_init, dtype)
    return DcpoState(count=jnp.zeros([], jnp.int32), h_prev=h,
                     temperature=temperature_of(h, dtype),
                     alpha=jnp.zeros([], dtype))

  def update_fn(rewards_BxG, state, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    token_mask = require(_WHAT, ctx, "token_mask_BxGxT", sizes)
    _checks.check_bool("token_mask_BxGxT", token_mask, what=_WHAT)
    logp_1 = require(_WHAT, ctx, "old_logp_BxGxT", sizes)
    logp_t = require(_WHAT, ctx, "logp_temp_BxGxT", sizes)
    _checks.check_floating("old_logp_BxGxT", logp_1, what=_WHAT)
    _checks.check_floating("logp_temp_BxGxT", logp_t, what=_WHAT)
    logp_1, logp_t = logp_1.astype(r.dtype), logp_t.astype(r.dtype)
    valid = token_mask & mask[..., None]
    sdtype = state.h_prev.dtype

    adv, _ = base.update(r, EmptyState(), mask_BxG=mask)
    correct = mask & (r > correct_threshold)
    n_valid = jnp.sum(mask, dtype=r.dtype)
    q = jnp.sum(correct, dtype=r.dtype) / jnp.maximum(n_valid, 1)
    h_prev = state.h_prev.astype(r.dtype)
    m = jnp.minimum(jnp.abs(h_base - h_prev), alpha_cap)
    if zero_accuracy == "limit":
      alpha = jnp.where(m + q > 0, m / jnp.where(m + q > 0, m + q, 1), 0)
    else:
      alpha = jnp.where(q > 0, m / jnp.where(q > 0, m + q, 1), 0)

    log_e = jnp.where(valid, logp_t - logp_1, 0)
    if log_ratio_clamp is not None:
      log_e = jnp.clip(log_e, -log_ratio_clamp, log_ratio_clamp)
    e = jnp.where(correct[..., None], jnp.exp(log_e), 0)
    out = (1 - alpha) * adv[..., None] + alpha * e
    out = jnp.where(valid, out, 0).astype(r.dtype)

    if update_entropy:
      n_tok = jnp.sum(valid, dtype=r.dtype)
      ent = -jnp.sum(jnp.where(valid, logp_1, 0)) / jnp.maximum(n_tok, 1)
      h_new = jnp.where(n_tok > 0, ent, h_prev).astype(sdtype)
      temperature = temperature_of(h_new, sdtype)
    else:
      h_new, temperature = state.h_prev, state.temperature
    new_state = DcpoState(count=safe_increment(state.count), h_prev=h_new,
                          temperature=temperature,
                          alpha=alpha.astype(sdtype))
    return out, new_state

  return AdvantageTransform(init_fn, update_fn)
