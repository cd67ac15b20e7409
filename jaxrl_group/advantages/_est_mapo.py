"""MAPO: blend the z-score and the percent deviation by trajectory certainty.

See Huang et al., "MAPO: Mixed Advantage Policy Optimization"
(arXiv 2509.18849); the project's estimator reference, §2.4.
"""

import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

MAPO_VARIANTS = ("pro", "air")


def certainty_weight(p, variant: str):
  """lambda(p): 0 for p = 1/2, 1 for p in {0, 1}.

  ``"pro"``: ``1 - 4 p (1 - p)``; ``"air"``: ``1 - 2 min(p, 1 - p)``.
  """
  if variant == "pro":
    return 1 - 4 * p * (1 - p)
  return 1 - 2 * jnp.minimum(p, 1 - p)


@register("mapo", min_group_size=2)
def mapo(*, variant: str = "pro", success_value: float = 1.0,
         success_tol: float = 0.0, std: str = "unbiased", eps: float = 1e-6,
         eps_placement: str = "std", std_floor: float = 0.0,
         mean_floor: float = 1e-3) -> AdvantageTransform:
  """MAPO: ``A = (1 - lam(p)) (r - mu) / (std + eps) + lam(p) (r - mu) / mu``.

  See Huang et al., "MAPO: Mixed Advantage Policy Optimization"
  (arXiv 2509.18849). p is the group's trajectory certainty, the fraction
  of valid samples whose reward equals ``success_value`` (the release
  tests ``r == 1.0``: correct and well formatted under its 0.9 accuracy +
  0.1 format reward). Uncertain groups (p near 1/2) get the usual z-score;
  certain ones (p near 0 or 1) get the "advantage percent deviation"
  ``(r - mu) / mu``. ``variant="pro"`` (GRPOMIXPRO, the paper's method)
  uses ``lam = 1 - 4 p (1 - p)``; ``"air"`` (GRPOMIXAIR in the same
  release) uses ``lam = 1 - 2 min(p, 1 - p)``.

  Division guard (a library choice, not from the paper): the release
  divides by ``mu + 1e-6``. Here the percent deviation divides by
  ``max(|mu|, mean_floor) + eps``. For rewards >= 0 (the paper's setting)
  the deviation is bounded by n - 1 anyway and the two agree whenever
  ``mu >= mean_floor`` (for 0/0.1/0.9/1 rewards that holds for G <= 100).
  Rewards with both signs can make ``mu`` 0 or negative: the release then
  explodes or flips the sign, while the guard keeps the output finite and
  the sign of ``r - mu``. A group with one valid sample has ``r = mu`` and
  gives 0.

  Args:
    variant: ``"pro"`` or ``"air"``, the certainty weight above.
    success_value: the reward that counts as a success for p.
    success_tol: a reward within this distance of ``success_value`` counts
      (release: exact equality, 0).
    std: std type of the z-score, ``"unbiased"`` (release) or
      ``"population"``.
    eps: added to the std (release: 1e-6) and to the mean's magnitude.
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``: ``/sqrt(var +
      eps)`` (z-score only).
    std_floor: the std is floored here before ``eps`` is applied.
    mean_floor: the magnitude of the mean is floored here in the percent
      deviation's denominator (see above); 0 reproduces the release for
      groups with ``mu >= 0``.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG=None)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  _checks.check_choice("variant", variant, MAPO_VARIANTS, what="mapo")
  _stats.check_conventions("mapo", std=std, eps=eps,
                           eps_placement=eps_placement, std_floor=std_floor)
  _checks.check_nonnegative("success_tol", success_tol, what="mapo")
  _checks.check_nonnegative("mean_floor", mean_floor, what="mapo")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("mapo", rewards_BxG, mask_BxG, min_group_size=2)
    st = _stats.group_stats(r, mask, std=std)
    hit = mask & (jnp.abs(r - success_value) <= success_tol)
    p = jnp.sum(hit, axis=-1, keepdims=True, dtype=r.dtype) / jnp.maximum(
        st.count, 1)
    lam = certainty_weight(p, variant)
    a_std = _stats.divide_by_std(st.centered, st.std, eps=eps,
                                 eps_placement=eps_placement,
                                 std_floor=std_floor)
    denom = jnp.maximum(jnp.abs(st.mean), mean_floor) + eps
    safe = jnp.where(denom > 0, denom, 1)
    a_mean = jnp.where(denom > 0, st.centered / safe, 0)
    adv = (1 - lam) * a_std + lam * a_mean
    return _stats.finish(adv, mask, st, "zero", r.dtype)

  return stateless(update_fn)
