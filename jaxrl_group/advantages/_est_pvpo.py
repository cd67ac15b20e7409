"""PVPO: a static, pre-estimated value baseline per prompt.

See Feng et al., "PVPO: Pre-Estimated Value-Based Policy Optimization for
Agentic Reasoning" (arXiv 2508.21104); the project's estimator reference,
§2.9 and §3.5 (the per-prompt table is state).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import optional
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import safe_increment
from jaxrl_group.advantages._registry import register

_WHAT = "pvpo"
FALLBACKS = ("group_mean", "zero")


class PvpoState(NamedTuple):
  """State of ``pvpo``: the per-prompt anchor table and the update count."""

  value: jax.Array  # shape=(table_size,), dtype=rewards; V-hat per prompt id
  written_at: jax.Array  # shape=(table_size,), dtype=jnp.int32; -1 = empty
  count: jax.Array  # shape=(), dtype=jnp.int32; updates so far


def _ref_rewards(r, ctx, sizes):
  """The reference rewards ``[B, M]`` from ctx (either key)."""
  ref = optional(_WHAT, ctx, "ref_rewards_BxG", sizes)
  name = "ref_rewards_BxG"
  if ref is None:
    ref = optional(_WHAT, ctx, "ref_rewards_BxM", dict(B=sizes["B"]))
    name = "ref_rewards_BxM"
  if ref is None:
    require(_WHAT, ctx, "ref_rewards_BxG", sizes)  # raises, naming the key
  _checks.check_floating(name, ref, what=_WHAT)
  return ref.astype(r.dtype)


@register(_WHAT, requires=("prompt_ids_B", "ref_rewards_BxG"), stateful=True)
def pvpo(*, table_size: int = 4096, refresh_every: int | None = None,
         fallback: str = "group_mean") -> AdvantageTransform:
  """PVPO: ``A_i = r_i - V(q)``, V a static per-prompt reference mean.

  See Feng et al., "PVPO: Pre-Estimated Value-Based Policy Optimization for
  Agentic Reasoning" (arXiv 2508.21104). The anchor ``V(q)`` is the mean
  reward of M rollouts of a reference model for prompt q, estimated once
  ("static V") and kept in a per-prompt table in the state; the group's own
  rewards do not enter it, so an all-equal group still gets ``r - V(q) !=
  0``. No std division [reading: the paper's normalisation is not verified;
  the third-party ``grpo-composer`` has none].

  Each update reads ``prompt_ids_B`` (integer ids in ``[0, table_size)``)
  and the reference rewards of this batch's prompts, ``ref_rewards_BxG``
  (M = G) or ``ref_rewards_BxM`` (any M); NaN marks a missing reward, and a
  row of NaN means "no new estimate for this prompt". A prompt's entry is
  written when it is empty, or, with ``refresh_every = N``, when it was
  written N or more updates ago ("the reference model updates R_ref at fixed
  steps" [summary]); otherwise the stored value is used unchanged. The new
  estimate pools all reference rewards of the rows with that id (rows with
  no valid sample are ignored). So the pre-sampled anchors can be loaded in
  a first pass, or supplied lazily with the batches.

  A row whose id is outside the table uses this batch's own reference mean
  and is not stored. A row with neither a table entry nor a reference
  reward uses ``fallback``. The paper's pre-sampling data filter (drop
  prompts with reference accuracy 1, add a ground-truth trajectory where it
  is 0) is a data-pipeline step; ``state.value`` holds the accuracies it
  needs.

  Args:
    table_size: number of table entries (prompt ids ``0 .. table_size-1``);
      static (under ``inject_hyperparams`` list it in ``static_args``).
    refresh_every: re-estimate an entry from new reference rewards once it
      is this many updates old; None (default) keeps the first estimate
      (static V). May be traced.
    fallback: baseline without any anchor: ``"group_mean"`` (the group's
      mean reward, i.e. Dr.GRPO) or ``"zero"`` (``A = r``).

  Returns:
    A stateful ``AdvantageTransform`` (state ``PvpoState``); ``update``
    returns ``[B, G]`` and needs ``prompt_ids_B`` and ``ref_rewards_BxG`` (or
    ``ref_rewards_BxM``) in ctx.
  """
  if not _checks.is_concrete(table_size):
    raise TypeError(f"{_WHAT}: table_size sets the state's shape and must be "
                    "static; with inject_hyperparams pass "
                    "static_args=('table_size',).")
  if (isinstance(table_size, bool) or jnp.ndim(table_size) != 0
      or not float(table_size).is_integer() or float(table_size) < 1):
    raise ValueError(f"{_WHAT}: table_size must be a positive int, got "
                     f"{table_size!r}.")
  table_size = int(table_size)
  if refresh_every is not None:
    _checks.check_nonnegative("refresh_every", refresh_every, what=_WHAT)
  _checks.check_choice("fallback", fallback, FALLBACKS, what=_WHAT)

  def init_fn(rewards_BxG):
    dtype = rewards_BxG.dtype
    _checks.check_floating("rewards_BxG", rewards_BxG, what=_WHAT)
    return PvpoState(value=jnp.zeros((table_size,), dtype),
                     written_at=jnp.full((table_size,), -1, jnp.int32),
                     count=jnp.zeros([], jnp.int32))

  def update_fn(rewards_BxG, state, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG)
    ids = require(_WHAT, ctx, "prompt_ids_B", sizes)
    _checks.check_integer("prompt_ids_B", ids, what=_WHAT)
    ref = _ref_rewards(r, ctx, sizes)
    dtype = state.value.dtype
    ref_ok = ~jnp.isnan(ref)
    ref_sum = jnp.sum(jnp.where(ref_ok, ref, 0), axis=-1).astype(dtype)
    ref_cnt = jnp.sum(ref_ok, axis=-1, dtype=dtype)
    row_est = ref_sum / jnp.maximum(ref_cnt, 1)
    has_est = (ref_cnt > 0) & jnp.any(mask, axis=-1)
    in_table = (ids >= 0) & (ids < table_size)
    slot = jnp.where(in_table, ids, 0).astype(jnp.int32)
    add = has_est & in_table
    # Pooled reference mean per id (several rows may share a prompt id).
    # The table keeps its own (replicated) sharding on explicit meshes.
    table_sharding = jax.typeof(state.value).sharding
    scatter = lambda x: jnp.zeros_like(state.value).at[slot].add(
        jnp.where(add, x, 0), out_sharding=table_sharding)
    tot, cnt = scatter(ref_sum), scatter(ref_cnt)
    age = state.count - state.written_at
    stale = state.written_at < 0
    if refresh_every is not None:
      stale = stale | (age >= refresh_every)
    write = (cnt > 0) & stale
    value = jnp.where(write, tot / jnp.maximum(cnt, 1), state.value)
    written_at = jnp.where(write, state.count, state.written_at)
    take = lambda table: table.at[slot].get(
        out_sharding=jax.typeof(slot).sharding)
    known = in_table & (take(written_at) >= 0)
    if fallback == "group_mean":
      fb = _stats.masked_mean(r, mask, axis=-1)
    else:
      fb = jnp.zeros_like(r[:, 0])
    base = jnp.where(known, take(value).astype(r.dtype),
                     jnp.where(has_est, row_est.astype(r.dtype), fb))
    adv = _stats.finish(r - base[:, None], mask, dtype=r.dtype)
    return adv, PvpoState(value, written_at, safe_increment(state.count))

  return AdvantageTransform(init_fn, update_fn)
