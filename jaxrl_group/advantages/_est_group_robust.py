"""Group-robust sample weights: exponentiated gradient or max-min over K groups.

See Ramesh et al. 2024, "Group Robust Preference Optimization in
Reward-free RLHF" (arXiv 2405.20304), and Chakraborty et al., "MaxMin-RLHF"
(ICML 2024, arXiv 2402.08925); the project's estimator reference, §2.25.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import EmptyState
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import safe_increment
from jaxrl_group.advantages._outcome import grpo
from jaxrl_group.advantages._registry import register

_WHAT = "group_robust"
MODES = ("eg", "maxmin")
WEIGHT_NORMS = ("batch", "none")


class GroupRobustState(NamedTuple):
  """State of ``group_robust``: the weights over the K groups."""

  count: jax.Array  # shape=(), dtype=jnp.int32; updates so far
  weights_K: jax.Array  # shape=(K,), dtype=rewards'; alpha on the simplex
  loss_K: jax.Array  # shape=(K,), dtype=rewards'; last seen group loss


@register(_WHAT, min_group_size=2, requires=("subgroup_ids_BxG",),
          stateful=True)
def group_robust(*, num_groups: int = 2, step_size: float = 0.1,
                 mode: str = "eg", weight_norm: str = "batch",
                 norm_by_std: bool = True, std: str = "unbiased",
                 eps: float = 1e-6, eps_placement: str = "std",
                 std_floor: float = 0.0,
                 singleton: str = "zero") -> AdvantageTransform:
  """Group-robust weights: GRPO advantages times ``N alpha_g / n_g``.

  See Ramesh et al. 2024, "Group Robust Preference Optimization in
  Reward-free RLHF" (arXiv 2405.20304; not DeepSeekMath's GRPO), and
  Chakraborty et al., "MaxMin-RLHF" (arXiv 2402.08925). Every sample belongs
  to one of K population groups (users, data sources; ``subgroup_ids_BxG``).
  The objective is ``min_pi max_{alpha in simplex} sum_g alpha_g L_g``; the
  weights ``alpha`` are state.

  [reading] (reference §2.25; adapted from preference losses to rewards):

  * group loss ``L_g = -mean(r)`` over the batch's valid samples of g;
  * ``mode="eg"`` (Group Robust PO): exponentiated-gradient ascent,
    ``alpha_g <- alpha_g exp(step_size L_g)``, renormalised. Groups absent
    from the batch keep their weight: the renormalisation is over the
    present groups and preserves their total mass (for a batch with all
    groups this is the plain ``alpha / sum(alpha)``);
  * ``mode="maxmin"`` (MaxMin-RLHF, egalitarian): all weight on the present
    group with the largest loss (lowest mean reward; ties to the lower id);
  * then, with the updated ``alpha`` (as Ramesh et al.'s algorithm), the
    policy gradient of ``sum_g alpha_g L_g`` is a per-sample weight
    ``alpha_g / n_g``; ``weight_norm="batch"`` multiplies it by N, the
    number of valid samples, so uniform weights over equal-size groups give
    1 (``"none"`` keeps ``alpha_g / n_g``);
  * the advantage is that weight times the GRPO advantage of each prompt's
    row (conventions below).

  A sample whose id is outside ``[0, num_groups)`` raises with concrete
  inputs; under ``jit`` it is treated as masked (left out, advantage 0).

  Args:
    num_groups: K, the number of population groups (static; under
      ``inject_hyperparams`` pass ``static_args=("num_groups",)``).
    step_size: ``eta_alpha`` of the exponentiated gradient (unknown in the
      source; 0.1 is a placeholder).
    mode: ``"eg"`` or ``"maxmin"``.
    weight_norm: ``"batch"`` (``N alpha_g / n_g``) or ``"none"``.
    norm_by_std, std, eps, eps_placement, std_floor, singleton: the GRPO
      conventions of the base advantage (see ``grpo``).

  Returns:
    A stateful ``AdvantageTransform`` with ``GroupRobustState`` (``alpha``
    starts uniform); ``update(rewards_BxG, state, *, mask_BxG,
    subgroup_ids_BxG)`` returns ``[B, G]``. ctx: ``subgroup_ids_BxG`` (int
    in ``[0, num_groups)``), each sample's population group.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  _checks.check_choice("mode", mode, MODES, what=_WHAT)
  _checks.check_choice("weight_norm", weight_norm, WEIGHT_NORMS, what=_WHAT)
  if (not isinstance(num_groups, (int, np.integer))
      or isinstance(num_groups, bool) or num_groups < 1):
    raise ValueError(f"{_WHAT}: num_groups must be a positive int, got "
                     f"{num_groups!r}.")
  _checks.check_nonnegative("step_size", step_size, what=_WHAT)
  k = int(num_groups)
  base = grpo(norm_by_std=norm_by_std, std=std, eps=eps,
              eps_placement=eps_placement, std_floor=std_floor,
              singleton=singleton)

  def init_fn(rewards_BxG):
    dtype = jax.dtypes.canonicalize_dtype(rewards_BxG.dtype)
    return GroupRobustState(count=jnp.zeros([], jnp.int32),
                            weights_K=jnp.full((k,), 1 / k, dtype),
                            loss_K=jnp.zeros((k,), dtype))

  def update_fn(rewards_BxG, state, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    ids = require(_WHAT, ctx, "subgroup_ids_BxG", sizes)
    _checks.check_integer("subgroup_ids_BxG", ids, what=_WHAT)
    if _checks.is_concrete(ids) and _checks.is_concrete(mask):
      host_ids, host_mask = np.asarray(ids), np.asarray(mask)
      bad = host_mask & ((host_ids < 0) | (host_ids >= k))
      if bad.any():
        raise ValueError(
            f"{_WHAT}: subgroup_ids_BxG must lie in [0, {k}) (num_groups) at "
            f"valid samples; got {host_ids[bad][:5].tolist()}.")
    mask = mask & (ids >= 0) & (ids < k)
    dtype = state.weights_K.dtype
    alpha = state.weights_K.astype(r.dtype)

    onehot = ((ids[..., None] == jnp.arange(k)[None, None, :])
              & mask[..., None])  # [B, G, K]
    n_k = jnp.sum(onehot, axis=(0, 1), dtype=r.dtype)
    sum_k = jnp.sum(jnp.where(onehot, r[..., None], 0), axis=(0, 1))
    present = n_k > 0
    any_present = jnp.any(present)
    loss = jnp.where(present, -sum_k / jnp.maximum(n_k, 1),
                     state.loss_K.astype(r.dtype))

    if mode == "eg":
      z = step_size * loss
      z_max = jnp.max(jnp.where(present, z, -jnp.inf))
      z_max = jnp.where(any_present, z_max, 0)
      w = jnp.where(present, alpha * jnp.exp(jnp.where(present, z - z_max,
                                                       0)), 0)
      total = jnp.sum(w)
      mass = jnp.sum(jnp.where(present, alpha, 0))
      new_alpha = jnp.where(
          present, w * mass / jnp.where(total > 0, total, 1), alpha)
    else:
      worst = jnp.argmax(jnp.where(present, loss, -jnp.inf))
      new_alpha = jnp.where(any_present,
                            (jnp.arange(k) == worst).astype(r.dtype), alpha)

    alpha_i = jnp.sum(jnp.where(onehot, new_alpha[None, None, :], 0), axis=-1)
    n_i = jnp.sum(jnp.where(onehot, n_k[None, None, :], 0), axis=-1)
    weight = alpha_i / jnp.maximum(n_i, 1)
    if weight_norm == "batch":
      weight = weight * jnp.sum(n_k)
    adv, _ = base.update(r, EmptyState(), mask_BxG=mask)
    out = jnp.where(mask, weight * adv, 0).astype(r.dtype)
    new_state = GroupRobustState(count=safe_increment(state.count),
                                 weights_K=new_alpha.astype(dtype),
                                 loss_K=loss.astype(dtype))
    return out, new_state

  return AdvantageTransform(init_fn, update_fn)
