"""AAPO: the group z-score plus a clipped policy-minus-reference reward gap.

See Xiong et al., "AAPO: Enhancing the Reasoning Capabilities of LLMs with
Advantage Momentum" (arXiv 2505.14264); the project's estimator reference,
§2.2.
"""

import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register


@register("aapo", min_group_size=2, requires=("ref_rewards_BxG",))
def aapo(*, delta_low: float = 0.2, delta_high: float = 0.28,
         norm_by_std: bool = True, std: str = "unbiased", eps: float = 1e-4,
         eps_placement: str = "std", std_floor: float = 0.0,
         singleton: str = "zero") -> AdvantageTransform:
  """AAPO: ``A_i = (r_i - mean_g) / (std_g + eps) + clip(r_i - r_ref_i)``.

  See Xiong et al., "AAPO: Enhancing the Reasoning Capabilities of LLMs with
  Advantage Momentum" (arXiv 2505.14264). The "advantage momentum"
  ``M_i = clip(r_i - r_ref_i, -delta_low, delta_high)`` compares the i-th
  policy sample with the i-th sample of the frozen reference model for the
  same prompt (paired by position, not against a group mean of the
  reference rewards). It is not a temporal average. A homogeneous group
  has a zero z-score but still gets ``M_i`` where the reference did better
  or worse. The paper trains this with a REINFORCE-style weighted
  cross-entropy (no ratio, no clip, no KL), which is a loss choice.

  Conventions follow the TRL-based release: unbiased std and ``+ 1e-4``
  (``scale_rewards=True``). ``M_i`` is pairwise, so it is added for every
  valid sample, singletons included; ``singleton`` only decides the
  z-score part of a one-sample group.

  Args:
    delta_low: ``M_i >= -delta_low`` (release: 0.2, hard-coded).
    delta_high: ``M_i <= delta_high`` (release: 0.28, hard-coded).
    norm_by_std: divide the centred reward by the group std (TRL
      ``scale_rewards``); False gives ``r_i - mean_g + M_i``.
    std: ``"unbiased"`` (TRL) or ``"population"``.
    eps: added to the std (TRL: 1e-4), or to the variance (``eps_placement``).
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``: ``/sqrt(var +
      eps)``.
    std_floor: the std is floored here before ``eps`` is applied.
    singleton: the z-score of a one-sample group is ``"zero"`` or its
      ``"raw"`` reward (mean 0, std 1).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG=None, ref_rewards_BxG)`` returns ``[B, G]`` advantages.
    Needs ctx ``ref_rewards_BxG``: the rewards of G reference-model samples
    per prompt, paired with the policy samples by position.
  """
  _stats.check_conventions("aapo", std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  _checks.check_nonnegative("delta_low", delta_low, what="aapo")
  _checks.check_nonnegative("delta_high", delta_high, what="aapo")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare("aapo", rewards_BxG, mask_BxG, min_group_size=2)
    ref = require("aapo", ctx, "ref_rewards_BxG", sizes)
    _checks.check_floating("ref_rewards_BxG", ref, what="aapo")
    z, st = _stats.group_zscore(
        r, mask, std=std, singleton=singleton, norm_by_std=norm_by_std,
        eps=eps, eps_placement=eps_placement, std_floor=std_floor)
    z = _stats.finish(z, mask, st, singleton, r.dtype)
    gap = jnp.where(mask, r - ref.astype(r.dtype), 0)
    momentum = jnp.clip(gap, -jnp.asarray(delta_low, r.dtype),
                        jnp.asarray(delta_high, r.dtype))
    return _stats.finish(z + momentum, mask, dtype=r.dtype)

  return stateless(update_fn)
