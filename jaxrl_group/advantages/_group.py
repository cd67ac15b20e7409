"""Composable pieces: group centring and scaling, batch whitening, clipping.

``grpo`` equals ``chain(center(), scale())``; these pieces let a researcher
assemble variants (``center`` alone is Dr.GRPO, ``center`` then
``batch_whiten`` is REINFORCE++-baseline at sequence level, and so on).
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


@register("center")
def center(*, singleton: str = "zero") -> AdvantageTransform:
  """Subtracts the group mean: ``x - mean_g``.

  The baseline of GRPO (Shao et al., arXiv 2402.03300) without its scale.

  Args:
    singleton: a group with one valid sample gives 0 (``"zero"``) or keeps
      its value (``"raw"``, verl: mean taken as 0).

  Returns:
    A stateless ``AdvantageTransform`` on ``[B, G]`` values.
  """
  _stats.check_conventions("center", singleton=singleton)

  def update_fn(values_BxG, *, mask_BxG=None, **ctx):
    del ctx
    x, mask, _ = prepare("center", values_BxG, mask_BxG)
    st = _stats.singleton_fix(_stats.group_stats(x, mask), singleton, x)
    return _stats.finish(st.centered, mask, st, singleton, x.dtype)

  return stateless(update_fn)


@register("scale")
def scale(*, level: str = "group", std: str = "unbiased", eps: float = 1e-6,
          eps_placement: str = "std", std_floor: float = 0.0,
          singleton: str = "zero") -> AdvantageTransform:
  """Divides by the std of the group (or of the whole batch).

  The scale of GRPO (Shao et al., arXiv 2402.03300). Values are not
  centred; the std is taken about the group (or batch) mean.

  Args:
    level: ``"group"`` (per prompt) or ``"batch"`` (all valid samples).
    std: ``"unbiased"`` (n - 1) or ``"population"`` (n).
    eps: added to the std (``eps_placement="std"``) or to the variance under
      the square root (``"var"``).
    eps_placement: where ``eps`` goes, see above.
    std_floor: the std is floored at this value before ``eps`` is added.
    singleton: with ``level="group"``, a one-sample group gives 0
      (``"zero"``) or is divided by 1 (``"raw"``, verl).

  Returns:
    A stateless ``AdvantageTransform`` on ``[B, G]`` values.
  """
  _checks.check_choice("level", level, ("group", "batch"), what="scale")
  _stats.check_conventions("scale", std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)

  def update_fn(values_BxG, *, mask_BxG=None, **ctx):
    del ctx
    x, mask, _ = prepare("scale", values_BxG, mask_BxG)
    if level == "group":
      st = _stats.singleton_fix(_stats.group_stats(x, mask, std=std),
                                singleton, x)
      sd = st.std
    else:
      st = None
      mean = _stats.masked_mean(x, mask)
      sd = _stats.masked_std(x, mask, mean, std=std)
    adv = _stats.divide_by_std(x, sd, eps=eps, eps_placement=eps_placement,
                               std_floor=std_floor)
    return _stats.finish(adv, mask, st, singleton, x.dtype)

  return stateless(update_fn)


def whiten(x: jax.Array, valid: jax.Array, *, std: str = "unbiased",
           eps=1e-8, eps_placement: str = "var",
           shift_mean: bool = True) -> jax.Array:
  """``(x - mean) / sqrt(var + eps)`` over the ``valid`` entries; 0 elsewhere.

  verl's ``masked_whiten``. With ``shift_mean=False`` the mean is added back.
  """
  mean = _stats.masked_mean(x, valid)
  sd = _stats.masked_std(x, valid, mean, std=std)
  out = _stats.divide_by_std(x - mean, sd, eps=eps,
                             eps_placement=eps_placement)
  if not shift_mean:
    out = out + mean
  return jnp.where(valid, out, 0).astype(x.dtype)


def token_valid(what: str, values, mask_BxG, ctx, sizes) -> jax.Array:
  """The valid-entry mask of ``[B, G]`` or ``[B, G, T]`` values."""
  if values.ndim == 2:
    return mask_BxG
  token_mask = require(what, ctx, "token_mask_BxGxT", sizes)
  _checks.check_bool("token_mask_BxGxT", token_mask, what=what)
  return mask_BxG[..., None] & token_mask


@register("batch_whiten")
def batch_whiten(*, std: str = "unbiased", eps: float = 1e-8,
                 eps_placement: str = "var",
                 shift_mean: bool = True) -> AdvantageTransform:
  """Whitens over all valid samples (or tokens) of the batch.

  The global whitening of REINFORCE++ (Hu et al., arXiv 2501.03262), verl's
  ``masked_whiten``: ``(x - mean) / sqrt(var_unbiased + 1e-8)``. On ``[B, G]``
  input the statistics run over valid samples; on ``[B, G, T]`` input over
  valid tokens (``token_mask_BxGxT`` from ctx). Under ``jit`` with B sharded,
  XLA inserts the cross-device reduction.

  Args:
    std: ``"unbiased"`` or ``"population"``.
    eps: see ``eps_placement``.
    eps_placement: ``"var"`` (under the square root, verl) or ``"std"``.
    shift_mean: if False, the batch mean is added back after scaling.

  Returns:
    A stateless ``AdvantageTransform``.
  """
  _stats.check_conventions("batch_whiten", std=std, eps=eps,
                           eps_placement=eps_placement)

  def update_fn(values, *, mask_BxG=None, **ctx):
    name = "adv_BxGxT" if jnp.ndim(values) == 3 else "adv_BxG"
    x, mask, sizes = prepare("batch_whiten", values, mask_BxG, name=name)
    valid = token_valid("batch_whiten", x, mask, ctx, sizes)
    return whiten(x, valid, std=std, eps=eps, eps_placement=eps_placement,
                  shift_mean=shift_mean)

  return stateless(update_fn)


@register("clip")
def clip(*, max_abs: float | None = None, low: float | None = None,
         high: float | None = None) -> AdvantageTransform:
  """Clips advantages elementwise to ``[low, high]`` (or ``[-max_abs, max_abs]``).

  Works on ``[B, G]`` and ``[B, G, T]`` values (masked tokens, from an
  optional ``token_mask_BxGxT``, come out as 0).

  Args:
    max_abs: symmetric bound; exclusive with ``low`` / ``high``.
    low: lower bound, or None for none.
    high: upper bound, or None for none.

  Returns:
    A stateless ``AdvantageTransform``.
  """
  if max_abs is not None:
    if low is not None or high is not None:
      raise ValueError("clip: pass either max_abs or low/high, not both.")
    _checks.check_nonnegative("max_abs", max_abs, what="clip")
    low, high = -max_abs, max_abs
  if low is None and high is None:
    raise ValueError("clip: pass max_abs, or low and/or high.")
  if (low is not None and high is not None and _checks.is_concrete(low)
      and _checks.is_concrete(high) and low > high):
    raise ValueError(f"clip: low ({low}) must be <= high ({high}).")

  def update_fn(values, *, mask_BxG=None, **ctx):
    name = "adv_BxGxT" if jnp.ndim(values) == 3 else "adv_BxG"
    x, mask, sizes = prepare("clip", values, mask_BxG, name=name)
    valid = mask if x.ndim == 2 else mask[..., None]
    token_mask = optional("clip", ctx, "token_mask_BxGxT", sizes)
    if x.ndim == 3 and token_mask is not None:
      valid = valid & token_mask
    return jnp.where(valid, jnp.clip(x, low, high), 0).astype(x.dtype)

  return stateless(update_fn)
