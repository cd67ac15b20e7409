"""CAPO: a positive-only curriculum phase, then all advantages.

See Yang et al., "CAPO: Curriculum Advantage Policy Optimization"
(arXiv 2512.02580); the project's estimator reference, §2.11.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import optional
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import safe_increment
from jaxrl_group.advantages._registry import register


class CapoState(NamedTuple):
  """State of ``capo``: how many updates have been applied."""

  count: jax.Array  # shape=(), dtype=jnp.int32; updates so far


@register("capo", input_name="adv_BxG", stateful=True)
def capo(*, total_steps: int = 1000,
         positive_fraction: float = 0.25) -> AdvantageTransform:
  """CAPO: positive advantages only for the first part of training.

  See Yang et al., "CAPO: Curriculum Advantage Policy Optimization"
  (arXiv 2512.02580). Phase 1 ("imitation", the first
  ``positive_fraction * total_steps`` updates) keeps only positive
  advantages, ``A' = A * 1[A > 0]``; phase 2 ("discrimination") passes all
  advantages through. It modifies the advantages of a base estimator, so use
  it after one in a chain, e.g. ``chain(grpo(), capo(total_steps=N))``.

  The switch is a hard switch at a fixed fraction of training: the source
  summary reports 20-30% of the steps working best and gradual mixing
  doing worse; no statistic-based ("adaptive") trigger is known, so the
  fraction is a hyperparameter [reading]. The paper masks negative samples
  out of the loss; here their advantage is set to 0, which removes their
  policy-gradient term (a token-mean loss still counts their tokens in the
  denominator, and KL or entropy terms still see them).

  The phase is read from ``state.count``, the number of updates so far
  (update number ``count`` is in phase 1 iff ``count < positive_fraction *
  total_steps``). If ctx holds ``step`` (the train step), that is used
  instead, so the phase follows the trainer's step even if this state was
  reset; ``count`` still advances.

  Args:
    total_steps: the planned number of training steps (the default 1000 is
      a placeholder; set it to the run's length).
    positive_fraction: the fraction of ``total_steps`` trained on positive
      advantages only (summary: about 0.2-0.3). 0 disables phase 1.

  Returns:
    A stateful ``AdvantageTransform`` with ``CapoState``;
    ``update(adv_BxG, state, *, mask_BxG=None, step=None)`` returns ``[B, G]``.
    Needs no ctx; reads the optional ``step``.
  """
  _checks.check_nonnegative("total_steps", total_steps, what="capo")
  _checks.check_nonnegative("positive_fraction", positive_fraction,
                            what="capo")

  def init_fn(rewards_BxG):
    del rewards_BxG
    return CapoState(count=jnp.zeros([], jnp.int32))

  def update_fn(adv_BxG, state, *, mask_BxG=None, **ctx):
    a, mask, sizes = prepare("capo", adv_BxG, mask_BxG, name="adv_BxG")
    step = optional("capo", ctx, "step", sizes)
    if step is None:
      step = state.count
    elif jnp.ndim(step) != 0:
      raise ValueError(f"capo: step must be a scalar, got shape "
                       f"{jnp.shape(step)}.")
    switch = jnp.asarray(positive_fraction, jnp.float32) * jnp.asarray(
        total_steps, jnp.float32)
    positive_only = step.astype(jnp.float32) < switch
    out = jnp.where(positive_only & (a <= 0), 0, a)
    adv = _stats.finish(out, mask, dtype=a.dtype)
    return adv, CapoState(count=safe_increment(state.count))

  return AdvantageTransform(init_fn, update_fn)
