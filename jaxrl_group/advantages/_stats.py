"""Masked group and batch statistics shared by the estimators.

Statistics are two-pass (mean first, then the centred sum of squares), never
E[x^2] - E[x]^2, which loses low-variance groups in float32 (the verl
vectorized GRPO bug, verl-project/verl#6348).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks

STD_TYPES = ("unbiased", "population")
EPS_PLACEMENTS = ("std", "var")
SINGLETON_POLICIES = ("zero", "raw")


def check_conventions(what: str, *, std: str | None = None,
                      eps_placement: str | None = None,
                      singleton: str | None = None, eps=None,
                      std_floor=None) -> None:
  """Validates the convention arguments shared by the estimators."""
  if std is not None:
    _checks.check_choice("std", std, STD_TYPES, what=what)
  if eps_placement is not None:
    _checks.check_choice("eps_placement", eps_placement, EPS_PLACEMENTS,
                         what=what)
  if singleton is not None:
    _checks.check_choice("singleton", singleton, SINGLETON_POLICIES,
                         what=what)
  if eps is not None:
    _checks.check_nonnegative("eps", eps, what=what)
  if std_floor is not None:
    _checks.check_nonnegative("std_floor", std_floor, what=what)


class GroupStats(NamedTuple):
  """Per-group statistics, each ``[B, 1]`` so they broadcast over G."""

  count: jax.Array  # number of valid samples, as the values' dtype
  mean: jax.Array
  std: jax.Array
  centered: jax.Array  # [B, G]: x - mean, computed from shifted data


def masked_mean(x: jax.Array, mask: jax.Array, axis=None,
                keepdims: bool = False) -> jax.Array:
  """Mean of ``x`` over ``mask``; 0 where the mask is empty."""
  count = jnp.sum(mask, axis=axis, keepdims=keepdims, dtype=x.dtype)
  total = jnp.sum(jnp.where(mask, x, 0), axis=axis, keepdims=keepdims)
  return total / jnp.maximum(count, 1)


def masked_std(x: jax.Array, mask: jax.Array, mean: jax.Array, *, std: str,
               axis=None, keepdims: bool = False) -> jax.Array:
  """Std of ``x`` over ``mask`` about ``mean`` (broadcastable to ``x``).

  ``std="unbiased"`` divides by n - 1 (``torch.std``), ``"population"`` by n
  (``np.std``). A set with too few elements (n <= 1 unbiased, n = 0) gives 0.
  """
  ddof = 1 if std == "unbiased" else 0
  count = jnp.sum(mask, axis=axis, keepdims=keepdims, dtype=x.dtype)
  sq = jnp.sum(jnp.where(mask, jnp.square(x - mean), 0), axis=axis,
               keepdims=keepdims)
  return jnp.sqrt(sq / jnp.maximum(count - ddof, 1))


def group_stats(x_BxG: jax.Array, mask_BxG: jax.Array, *,
                std: str = "unbiased") -> GroupStats:
  """Count, mean, std and centred values of each group over its valid samples.

  The data are shifted by one valid member of the group first, so that
  rewards with a large common offset keep their small differences in float32
  (the shifted-data variance algorithm).
  """
  count = jnp.sum(mask_BxG, axis=-1, keepdims=True, dtype=x_BxG.dtype)
  shift = jnp.max(jnp.where(mask_BxG, x_BxG, -jnp.inf), axis=-1,
                  keepdims=True)
  shift = jnp.where(count > 0, shift, 0)
  d = x_BxG - shift
  mean_d = masked_mean(d, mask_BxG, axis=-1, keepdims=True)
  sd = masked_std(d, mask_BxG, mean_d, std=std, axis=-1, keepdims=True)
  return GroupStats(count, shift + mean_d, sd, d - mean_d)


def singleton_fix(stats: GroupStats, singleton: str,
                  x_BxG: jax.Array) -> GroupStats:
  """Applies verl's singleton convention (mean 0, std 1) when ``"raw"``.

  With ``"zero"`` the statistics are left as they are and the caller zeroes
  the singleton's output with :func:`finish`.
  """
  if singleton != "raw":
    return stats
  one = stats.count == 1
  return GroupStats(stats.count, jnp.where(one, 0, stats.mean),
                    jnp.where(one, 1, stats.std),
                    jnp.where(one, x_BxG, stats.centered))


def group_zscore(x_BxG: jax.Array, mask_BxG: jax.Array, *, std: str,
                 singleton: str, norm_by_std: bool = True, eps=1e-6,
                 eps_placement: str = "std", std_floor=0.0
                 ) -> tuple[jax.Array, GroupStats]:
  """GRPO's ``(x - mean_g) / (std_g + eps)`` before :func:`finish`.

  Returns the advantages (masked entries and "zero" singletons not yet
  zeroed) and the group statistics, for estimators built on GRPO's z-score.
  """
  st = singleton_fix(group_stats(x_BxG, mask_BxG, std=std), singleton, x_BxG)
  adv = st.centered
  if norm_by_std:
    adv = divide_by_std(adv, st.std, eps=eps, eps_placement=eps_placement,
                        std_floor=std_floor)
  return adv, st


def divide_by_std(centered: jax.Array, sd: jax.Array, *, eps,
                  eps_placement: str, std_floor=0.0) -> jax.Array:
  """``centered / (max(sd, std_floor) + eps)`` or ``/ sqrt(max(...)^2 + eps)``.

  ``eps_placement="std"`` adds eps to the std (verl GRPO, TRL);
  ``"var"`` adds it to the variance under the square root (verl whitening).
  ``std_floor`` floors the std first (verl vectorized GRPO's variance floor
  corresponds to ``std_floor = sqrt(1e-6) = 1e-3``; NeMo RL floors at 1e-3).
  """
  sd = jnp.maximum(sd, std_floor)
  if eps_placement == "std":
    denom = sd + eps
  else:
    denom = jnp.sqrt(jnp.square(sd) + eps)
  return centered / denom


def finish(adv: jax.Array, mask_BxG: jax.Array, stats: GroupStats | None = None,
           singleton: str = "zero", dtype=None) -> jax.Array:
  """Zeroes masked entries (and singletons under ``"zero"``); sets the dtype."""
  keep = mask_BxG
  if stats is not None and singleton == "zero":
    keep = keep & (stats.count > 1)
  while keep.ndim < adv.ndim:
    keep = keep[..., None]
  out = jnp.where(keep, adv, 0)
  return out.astype(dtype) if dtype is not None else out
