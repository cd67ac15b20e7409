"""AdvEvo-MARL's public baseline: one mean per functional group of players.

See Pan et al., "AdvEvo-MARL" (arXiv 2510.01586); the project's estimator
reference, §2.24.
"""

import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

_WHAT = "group_baseline"


@register(_WHAT, min_group_size=2, requires=("role_ids_BxG",))
def group_baseline(*, norm_by_std: bool = False, std: str = "unbiased",
                   eps: float = 1e-6, eps_placement: str = "std",
                   std_floor: float = 0.0,
                   singleton: str = "zero") -> AdvantageTransform:
  """Functional-group baseline: ``A = R - mean of R over the same role``.

  See Pan et al., "AdvEvo-MARL: Shaping Internalized Safety through
  Adversarial Co-Evolution in Multi-Agent Reinforcement Learning"
  (arXiv 2510.01586). All players of one functional group (for example the
  attackers, or the defenders) share one baseline: the mean return over
  every player of that group and all of its rollouts for the task, instead
  of a per-player baseline.

  Layout: row b is one task; its G entries are the (player, rollout) pairs,
  e.g. ``R[K, J]`` of K players and J rollouts reshaped to ``G = K * J``.
  ``role_ids_BxG`` gives each entry's functional group; entries of a row
  with equal ids form one baseline group (any integers; ids are not
  compared across rows). Masked entries are left out of every mean. The
  memberships are a ``[B, G, G]`` comparison, so no static number of roles
  is needed (cost O(G^2) per row).

  [summary] The source (abstract and summaries, no public code) gives
  ``A = R - b_F``. [reading] The optional GRPO-style division by the
  functional group's std (``norm_by_std``) is the reference's reading and is
  off by default.

  Args:
    norm_by_std: also divide by the functional group's std [reading].
    std: ``"unbiased"`` or ``"population"`` (with ``norm_by_std``).
    eps: added to the std, or to the variance (``eps_placement``).
    eps_placement: ``"std"`` or ``"var"``.
    std_floor: the std is floored here first.
    singleton: an entry alone in its functional group gives ``"zero"`` or
      its ``"raw"`` return (baseline 0, std 1).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG, role_ids_BxG)`` returns ``[B, G]``. ctx: ``role_ids_BxG``
    (int), the functional group of each entry.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    ids = require(_WHAT, ctx, "role_ids_BxG", sizes)
    _checks.check_integer("role_ids_BxG", ids, what=_WHAT)
    # same[b, i, j]: j is a valid member of i's functional group.
    same = (ids[:, :, None] == ids[:, None, :]) & mask[:, None, :]
    count = jnp.sum(same, axis=-1, dtype=r.dtype)  # [B, G]
    # Shift by the row's largest valid reward (precision, as group_stats).
    shift = jnp.max(jnp.where(mask, r, -jnp.inf), axis=-1, keepdims=True)
    shift = jnp.where(jnp.any(mask, axis=-1, keepdims=True), shift, 0)
    d = jnp.where(mask, r - shift, 0)
    safe = jnp.maximum(count, 1)
    mean_d = jnp.sum(jnp.where(same, d[:, None, :], 0), axis=-1) / safe
    centered = d - mean_d
    one = count == 1
    if singleton == "raw":
      centered = jnp.where(one, r, centered)
    adv = centered
    if norm_by_std:
      ddof = 1 if std == "unbiased" else 0
      dev = jnp.where(same, d[:, None, :] - mean_d[:, :, None], 0)
      var = jnp.sum(jnp.square(dev), axis=-1) / jnp.maximum(count - ddof, 1)
      sd = jnp.sqrt(var)
      if singleton == "raw":
        sd = jnp.where(one, 1, sd)
      adv = _stats.divide_by_std(adv, sd, eps=eps,
                                 eps_placement=eps_placement,
                                 std_floor=std_floor)
    keep = mask if singleton == "raw" else mask & (count > 1)
    return jnp.where(keep, adv, 0).astype(r.dtype)

  return stateless(update_fn)
