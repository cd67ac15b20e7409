"""HAPO's token-level group average advantage (adv_estimator ``hapo``).

See Liu et al., "From Uniform to Heterogeneous: Tailoring Policy
Optimization to Every Token's Nature" (HAPO, arXiv 2509.16591); the
project's estimator reference, §2.22. The loss-side parts of HAPO (entropy
normalisation, adaptive clipping, advantage redistribution) are
``losses.hapo_entropy_scale`` and ``losses.hapo_clip``.
"""

import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import EmptyState
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._outcome import grpo
from jaxrl_group.advantages._registry import register

_WHAT = "hapo"
FALLBACK_CHECKS = ("valid", "code")


@register(_WHAT, min_group_size=2, requires=("token_mask_BxGxT",),
          token_level=True)
def hapo(*, norm_by_std: bool = True, eps: float = 1e-6,
         fallback_threshold: float = 5.0, fallback_check: str = "valid",
         fallback_std: str = "unbiased",
         singleton: str = "zero") -> AdvantageTransform:
  """HAPO token-level group average: length-weighted group statistics.

  See Liu et al., "From Uniform to Heterogeneous" (HAPO, arXiv 2509.16591),
  code ``compute_hapo_outcome_advantage`` (starriver030515/HAPO @ 7671dde).
  Every valid token carries its response's reward, so the group mean and
  the **population** std are over all valid tokens of the group, i.e.
  weighted by the lengths ``L_i``::

    mu_g = sum_i L_i r_i / sum_i L_i
    sigma_g^2 = sum_i L_i (r_i - mu_g)^2 / sum_i L_i
    A_{i,t} = (r_i - mu_g) / (sigma_g + eps)

  If any ``|A| >= fallback_threshold`` in the group, the whole group falls
  back to the sequence-level GRPO advantage ``(r - mean) / (std + eps)``
  (``fallback_std``, unbiased as verl's GRPO). The advantage is constant
  over a response's valid tokens and 0 elsewhere.

  ``fallback_check`` decides where the threshold is checked:

  * ``"valid"`` (default): only at valid tokens, so the result does not
    depend on how far T is padded.
  * ``"code"``: as the released code, which also checks the padded
    positions of the group's responses, where its value is
    ``(0 - mu_g) / (sigma_g + eps)``. A group with any padding then falls
    back whenever ``|mu_g| / (sigma_g + eps) >= threshold``, e.g. every
    all-equal non-zero group and every singleton (a padding-dependent
    pitfall; kept for reproduction only).

  Args:
    norm_by_std: divide by ``sigma_g + eps`` (verl ``norm_adv_by_std_in_grpo``;
      the GRPO fallback follows it too).
    eps: added to both stds (HAPO 1e-6).
    fallback_threshold: the ``|A|`` that triggers the fallback (HAPO 5;
      inclusive, ``>=``).
    fallback_check: ``"valid"`` or ``"code"``, see above.
    fallback_std: std type of the GRPO fallback.
    singleton: the GRPO fallback's one-sample groups give ``"zero"`` or, as
      verl, ``"raw"``. (With ``"valid"`` a singleton never falls back: its
      token-level advantage is 0.)

  Returns:
    A stateless ``AdvantageTransform``; needs ``token_mask_BxGxT`` in ctx
    and returns ``[B, G, T]``.
  """
  _stats.check_conventions(_WHAT, std=fallback_std, eps=eps,
                           singleton=singleton)
  _checks.check_choice("fallback_check", fallback_check, FALLBACK_CHECKS,
                       what=_WHAT)
  _checks.check_nonnegative("fallback_threshold", fallback_threshold,
                            what=_WHAT)
  base = grpo(norm_by_std=norm_by_std, std=fallback_std, eps=eps,
              singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    token_mask = require(_WHAT, ctx, "token_mask_BxGxT", sizes)
    _checks.check_bool("token_mask_BxGxT", token_mask, what=_WHAT)
    valid = token_mask & mask[..., None]
    lengths = jnp.sum(valid, axis=-1).astype(r.dtype)  # 0 where masked
    has_tokens = lengths > 0
    total = jnp.sum(lengths, axis=-1, keepdims=True)
    nonempty = total > 0
    # Shift by one member's reward so that all-equal groups centre to
    # exactly 0 in float32 (see _stats.group_stats).
    shift = jnp.max(jnp.where(has_tokens, r, -jnp.inf), axis=-1,
                    keepdims=True)
    shift = jnp.where(nonempty, shift, 0)
    d = jnp.where(has_tokens, r - shift, 0)
    denom = jnp.where(nonempty, total, 1)
    mean_d = jnp.sum(lengths * d, axis=-1, keepdims=True) / denom
    centered = jnp.where(has_tokens, d - mean_d, 0)
    sigma = jnp.sqrt(jnp.sum(lengths * jnp.square(centered), axis=-1,
                             keepdims=True) / denom)
    scale = sigma + eps if norm_by_std else jnp.ones_like(sigma)
    adv_seq = centered / scale
    big = has_tokens & (jnp.abs(adv_seq) >= fallback_threshold)
    fallback = jnp.any(big, axis=-1, keepdims=True)
    if fallback_check == "code":
      padded = mask & (lengths < sizes["T"])
      at_pad = jnp.abs(shift + mean_d) / scale
      fallback = fallback | (jnp.any(padded, axis=-1, keepdims=True)
                             & (at_pad >= fallback_threshold))
    adv_grpo, _ = base.update(r, EmptyState(), mask_BxG=mask)
    adv = jnp.where(fallback, adv_grpo, adv_seq)
    out = jnp.where(valid, adv[..., None], 0)
    return out.astype(r.dtype)

  return stateless(update_fn)
