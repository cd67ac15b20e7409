"""PSHW: policy-specific hardness weighting, ``(R_i - mu) (alpha mu + beta)``.

See Wu et al., "Confucius3-Math" (arXiv 2506.18330), §6; the project's
estimator reference, §2.13.
"""

import jax
import jax.numpy as jnp

from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register


def pshw_weight(mu: jax.typing.ArrayLike, *, alpha=-0.256,
                beta=1.256) -> jax.Array:
  """The hardness weight ``D(q) = alpha mu + beta`` of a group mean ``mu``.

  With the paper's constants ``D(1) = 1.0`` (all correct) and ``D(-1) =
  1.512`` (all wrong). See Wu et al., Confucius3-Math (arXiv 2506.18330).
  """
  return alpha * jnp.asarray(mu) + beta

@register("pshw", min_group_size=2)
def pshw(*, alpha: float = -0.256, beta: float = 1.256,
         correct_threshold: float | None = None,
         singleton: str = "zero") -> AdvantageTransform:
  """PSHW: ``A_i = (R_i - mu_g) D(q)``, ``D(q) = alpha mu_g + beta``.

  See Wu et al., Confucius3-Math (arXiv 2506.18330), §6, Policy-Specific
  Hardness Weighting. Rewards are ``R = +1`` (correct) or ``-1``;
  ``mu_g`` is the group's mean over its valid samples. With the paper's
  ``alpha = -0.256``, ``beta = 1.256`` the weight runs from ``D = 1.0``
  (``mu = 1``, all correct) to ``D = 1.512`` (``mu = -1``, all wrong), so
  hard prompts get larger advantages. There is **no** std division.

  The paper pairs it with DAPO's dynamic sampling (``0 < #correct < G``) and
  a plain token sum without length normalisation; both live outside this
  transform (sampling and ``losses``). A homogeneous group gives 0.

  Args:
    alpha: slope of ``D`` in ``mu`` (paper: -0.256).
    beta: intercept of ``D`` (paper: 1.256).
    correct_threshold: ``None``: the rewards are used as given (expected to
      be +1/-1, as in the paper; partial credit in [-1, 1] passes through).
      A number ``t``: ``R = +1`` where ``r >= t`` and ``-1`` elsewhere (use
      0.5 for 0/1 correctness rewards).
    singleton: a group with one valid sample gives ``"zero"`` (its mean is
      itself) or ``"raw"``: ``mu`` is taken as 0, so ``A = R * beta``.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  _stats.check_conventions("pshw", singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("pshw", rewards_BxG, mask_BxG, min_group_size=2)
    if correct_threshold is not None:
      r = jnp.where(r >= correct_threshold, 1, -1).astype(r.dtype)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    d = pshw_weight(st.mean, alpha=alpha, beta=beta)
    return _stats.finish(st.centered * d, mask, st, singleton, r.dtype)

  return stateless(update_fn)
