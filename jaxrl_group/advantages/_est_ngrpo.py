"""NGRPO: group statistics with k virtual maximum-reward samples added.

See Nan et al., "NGRPO: Negative-enhanced Group Relative Policy
Optimization" (arXiv 2509.18851); the project's estimator reference, §2.5.
"""

import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

NGRPO_SINGLETON = ("zero", "raw", "virtual")


@register("ngrpo", min_group_size=2)
def ngrpo(*, r_max: float = 1.0, k: float = 1, std: str = "unbiased",
          eps: float = 1e-6, eps_placement: str = "std",
          std_floor: float = 0.0, singleton: str = "zero",
          ) -> AdvantageTransform:
  """NGRPO: ``A_i = (r_i - mu') / (std' + eps)`` over the group and k r_max's.

  See Nan et al., "NGRPO: Negative-enhanced Group Relative Policy
  Optimization" (arXiv 2509.18851). ``mu'`` and ``std'`` are the mean and
  std of the n valid rewards together with k virtual samples of reward
  ``r_max`` (Bessel over n + k for the unbiased std). The virtual samples
  get no advantage and no loss. An all-wrong group now gets negative
  advantages (G = 8, binary: ``-1/3`` each) and an all-correct group 0;
  one success in 8 gives +1.76 / -0.50 where GRPO gives +2.47 / -0.35.
  The paper's asymmetric clipping (eps_low 0.16, eps_high 0.24) and
  all-correct-only group filtering live in the loss and the sampler.

  Args:
    r_max: the virtual samples' reward, the task's maximum (release:
      ``algorithm.max_reward = 1.0``). May be traced.
    k: the number of virtual samples (release: ``add_max_reward_num = 1``);
      0 gives GRPO. May be traced.
    std: ``"unbiased"`` (release, n + k - 1) or ``"population"`` (n + k).
    eps: added to the std (release: 1e-6), or to the variance.
    eps_placement: ``"std"``: ``/(std' + eps)``; ``"var"``: ``/sqrt(var' +
      eps)``.
    std_floor: ``std'`` is floored here before ``eps`` is applied.
    singleton: a group with one valid sample gives ``"zero"``; ``"raw"``,
      its reward ``r / (1 + eps)`` (the release: mean 0, std 1, no virtual
      sample); or ``"virtual"``, the formula above with n = 1.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG=None)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  _checks.check_choice("singleton", singleton, NGRPO_SINGLETON, what="ngrpo")
  _stats.check_conventions("ngrpo", std=std, eps=eps,
                           eps_placement=eps_placement, std_floor=std_floor)
  _checks.check_nonnegative("k", k, what="ngrpo")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("ngrpo", rewards_BxG, mask_BxG, min_group_size=2)
    dtype = r.dtype
    top = jnp.asarray(r_max, dtype)
    kk = jnp.asarray(k, dtype)
    n = jnp.sum(mask, axis=-1, keepdims=True, dtype=dtype)
    # Shift by r_max: the virtual samples are 0 and an all-r_max group is
    # exactly 0 (two-pass statistics, as in _stats).
    d = jnp.where(mask, r - top, 0)
    total = n + kk
    mean_d = jnp.sum(d, axis=-1, keepdims=True) / jnp.maximum(total, 1)
    centered = d - mean_d
    sq = (jnp.sum(jnp.where(mask, jnp.square(centered), 0), axis=-1,
                  keepdims=True) + kk * jnp.square(mean_d))
    ddof = 1 if std == "unbiased" else 0
    sd = jnp.sqrt(sq / jnp.maximum(total - ddof, 1))
    if singleton == "raw":
      one = n == 1
      centered = jnp.where(one, r, centered)
      sd = jnp.where(one, 1, sd)
    adv = _stats.divide_by_std(centered, sd, eps=eps,
                               eps_placement=eps_placement,
                               std_floor=std_floor)
    keep = mask & (n > 1) if singleton == "zero" else mask
    return _stats.finish(adv, keep, dtype=dtype)

  return stateless(update_fn)
