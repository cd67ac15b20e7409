"""SGPO: graded rewards from a step-wise judge for all-wrong groups.

See Chen, Li, Li, Chen, Lin, "Stepwise Guided Policy Optimization: Coloring
your Incorrect Reasoning in GRPO" (arXiv 2505.11595); the project's
estimator reference, §2.17. The formula here is the reference's [reading]
(no public code; the paper's own function and hyperparameters are unknown).
"""

import jax
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

_WHAT = "sgpo_graded"
_KEYS = ("first_error_step_BxG", "num_steps_BxG")


def _judge_input(ctx, key, sizes, dtype):
  x = require(_WHAT, ctx, key, sizes)
  kind = jnp.result_type(x)
  if not (jnp.issubdtype(kind, jnp.integer)
          or jnp.issubdtype(kind, jnp.floating)):
    raise TypeError(f"{_WHAT}: {key} must be an integer or floating-point "
                    f"array, got dtype {kind}.")
  return x.astype(dtype)


@register(_WHAT, min_group_size=2, requires=_KEYS)
def sgpo_graded(*, beta: float = 5.0, gamma: float = 0.5,
                scale: float = 0.5, correct_threshold: float = 0.5,
                first_step_index: float = 1.0, clip_rts: bool = True,
                norm_by_std: bool = True, std: str = "unbiased",
                eps: float = 1e-6, eps_placement: str = "std",
                std_floor: float = 0.0,
                singleton: str = "zero") -> AdvantageTransform:
  """SGPO: all-wrong groups get judge-graded rewards, then GRPO.

  See Chen et al., "Stepwise Guided Policy Optimization: Coloring your
  Incorrect Reasoning in GRPO" (arXiv 2505.11595), formerly "Spectral Policy
  Optimization". A step-wise judge finds, for every response of a group in
  which no response is correct, the first wrong step ``k_i`` of its ``n_i``
  steps (host side). Those groups get a graded reward below a correct one,
  so GRPO gives them non-zero advantages; other groups are plain GRPO.

  [reading] The source gives the shape only (first-error step -> "reasoning
  trajectory score" -> logistic with two hyperparameters; summaries and
  reviews, no public code). Implemented reading, every constant a keyword:

  * ``RTS_i = (k_i - first_step_index) / max(n_i, 1)``, the fraction of
    steps before the first error, clipped to [0, 1] (``clip_rts``);
  * ``r~_i = scale * sigmoid(beta (RTS_i - gamma))`` replaces ``r_i`` for
    every valid response of an all-wrong group;
  * ``A = grpo(r~)`` with the GRPO conventions below.

  A response is correct iff ``r > correct_threshold``; a group is all-wrong
  iff none of its valid responses is correct. The judge inputs of the other
  groups are ignored (pass anything, e.g. 0). A response in which the judge
  finds no wrong step should get ``k_i = n_i + first_step_index`` (RTS 1).

  Args:
    beta: logistic slope (unknown in the source; 5.0 is a placeholder).
    gamma: logistic midpoint in RTS units (unknown; 0.5).
    scale: ``c``, the largest graded reward; keep it below the reward of a
      correct response (0.5 for 0/1 rewards). Under the std division the
      advantages barely depend on it (only through ``eps``).
    correct_threshold: rewards above it count as correct (0.5 suits 0/1 and
      -1/1 rewards).
    first_step_index: the index of the first step in ``k`` (1: 1-based, the
      reading's ``k - 1``; 0: 0-based).
    clip_rts: clip RTS to [0, 1].
    norm_by_std, std, eps, eps_placement, std_floor, singleton: the GRPO
      conventions (see ``grpo``); defaults as ``grpo``.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG, first_error_step_BxG, num_steps_BxG)`` returns ``[B, G]``.
    ctx: ``first_error_step_BxG`` (k, int or float) and ``num_steps_BxG``
    (n, int or float), the judge's output per response.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  _checks.check_nonnegative("beta", beta, what=_WHAT)
  _checks.check_nonnegative("scale", scale, what=_WHAT)
  base = grpo(norm_by_std=norm_by_std, std=std, eps=eps,
              eps_placement=eps_placement, std_floor=std_floor,
              singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    k = _judge_input(ctx, "first_error_step_BxG", sizes, r.dtype)
    n = _judge_input(ctx, "num_steps_BxG", sizes, r.dtype)
    rts = (k - first_step_index) / jnp.maximum(n, 1)
    if clip_rts:
      rts = jnp.clip(rts, 0, 1)
    graded = scale * jax.nn.sigmoid(beta * (rts - gamma))
    correct = mask & (r > correct_threshold)
    all_wrong = ~jnp.any(correct, axis=-1, keepdims=True)
    r_new = jnp.where(all_wrong & mask, graded.astype(r.dtype), r)
    adv, _ = base.update(r_new, EmptyState(), mask_BxG=mask)
    return adv

  return stateless(update_fn)
