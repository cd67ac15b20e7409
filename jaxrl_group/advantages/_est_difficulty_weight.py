"""Difficulty-weighted GRPO: ``W(p_g) * A_i``, W decreasing in group accuracy.

See Chen et al., difficulty prior in RL-based multimodal reasoning
(arXiv 2505.13261); the project's estimator reference, §2.12.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

WEIGHTS = ("linear", "exp")


def difficulty_weight_fn(kind: str, lam) -> Callable[[jax.Array], jax.Array]:
  """The built-in weights ``W(p)``, each with ``W(1) = 1``.

  Args:
    kind: ``"linear"``: ``W(p) = 1 + lam (1 - p)``; ``"exp"``:
      ``W(p) = exp(lam (1 - p))``, i.e. ``exp(-lam p)`` normalised so that an
      always-solved prompt keeps weight 1.
    lam: the strength (>= 0; 0 gives W = 1, plain GRPO).

  Returns:
    A function from accuracies ``p`` in [0, 1] to weights.
  """
  _checks.check_choice("weight", kind, WEIGHTS, what="difficulty_weight")
  if kind == "linear":
    return lambda p: 1 + lam * (1 - p)
  return lambda p: jnp.exp(lam * (1 - p))


@register("difficulty_weight", min_group_size=2)
def difficulty_weight(*, weight: str | Callable[[jax.Array], jax.Array] =
                      "linear", lam: float = 1.0,
                      success_threshold: float | None = None,
                      norm_by_std: bool = True, std: str = "unbiased",
                      eps: float = 1e-6, eps_placement: str = "std",
                      std_floor: float = 0.0, singleton: str = "zero",
                      ) -> AdvantageTransform:
  """Difficulty-weighted GRPO: ``W(p_g) (r_i - mean_g) / (std_g + eps)``.

  See Chen et al., difficulty prior in RL-based multimodal reasoning
  (arXiv 2505.13261), its "online advantage differentiation": the group
  accuracy ``p_g`` is a difficulty proxy and the GRPO advantage is scaled by
  a weight ``W(p_g)`` that decreases in ``p_g`` (a stronger signal for harder
  prompts). The paper's W is not known: the built-in weights are the
  reference's [reading], ``W(p) = 1 + lam (1 - p)`` (``"linear"``) and
  ``exp(-lam p)`` normalised to ``W(1) = 1``, i.e. ``exp(lam (1 - p))``
  (``"exp"``); any jittable ``W`` can be passed instead. The paper's offline
  curation and prompt hints are data-side and not part of this transform.
  Homogeneous groups give 0 before the multiplication, so they stay 0.

  Args:
    weight: ``"linear"``, ``"exp"`` or a jittable function mapping the
      accuracies ``p`` (shape ``[B, 1]``, in [0, 1]) to weights. Under
      ``inject_hyperparams`` pass ``static_args=("weight",)`` with a
      function, or it is taken for a schedule.
    lam: strength of the built-in weights (>= 0; default 1.0, the paper's
      value is unknown). Ignored by a callable ``weight``.
    success_threshold: ``None``: ``p_g`` is the group's mean reward clipped
      to [0, 1] (the accuracy for 0/1 rewards); a number ``t``: ``p_g`` is
      the fraction of valid samples with ``r >= t``.
    norm_by_std: divide by the group std (GRPO z-score, as in the paper).
    std: ``"unbiased"`` (n - 1) or ``"population"`` (n).
    eps: added to the std or to the variance (``eps_placement``).
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``:
      ``/sqrt(var + eps)``.
    std_floor: the std is floored here first.
    singleton: a group with one valid sample gives ``"zero"`` or, as verl
      GRPO, ``"raw"`` (mean 0, std 1), weighted by ``W(p_g)``.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  what = "difficulty_weight"
  _stats.check_conventions(what, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  if callable(weight):
    w_fn = weight
  else:
    _checks.check_nonnegative("lam", lam, what=what)
    w_fn = difficulty_weight_fn(weight, lam)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare(what, rewards_BxG, mask_BxG, min_group_size=2)
    st = _stats.group_stats(r, mask, std=std)
    if success_threshold is None:
      p = jnp.clip(st.mean, 0, 1)
    else:
      p = _stats.masked_mean((r >= success_threshold).astype(r.dtype), mask,
                             axis=-1, keepdims=True)
    st = _stats.singleton_fix(st, singleton, r)
    adv = st.centered
    if norm_by_std:
      adv = _stats.divide_by_std(adv, st.std, eps=eps,
                                 eps_placement=eps_placement,
                                 std_floor=std_floor)
    w = jnp.asarray(w_fn(p), r.dtype)
    return _stats.finish(w * adv, mask, st, singleton, r.dtype)

  return stateless(update_fn)
