"""EDGE-GRPO's entropy-driven advantage (EDA).

See Zhang et al., "EDGE-GRPO: Entropy-Driven GRPO with Guided Error
Correction for Advantage Diversity" (arXiv 2507.21848); the project's
estimator reference, §2.6.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import optional
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

_WHAT = "edge_eda"
MEAN_OVER = ("batch", "group")
ENTROPY_MEANS = ("masked", "unmasked")


def _sample_entropy(r, mask, ctx, sizes, entropy_mean):
  """``(P_BxG, has_entropy_BxG)``: each sample's mean token entropy."""
  h_tok = optional(_WHAT, ctx, "entropy_BxGxT", sizes)
  if h_tok is None:
    h = require(_WHAT, ctx, "entropy_BxG", sizes)
    _checks.check_floating("entropy_BxG", h, what=_WHAT)
    return h.astype(r.dtype), mask
  _checks.check_floating("entropy_BxGxT", h_tok, what=_WHAT)
  h_tok = h_tok.astype(r.dtype)
  if entropy_mean == "unmasked":
    # The authors' code: a plain mean over all T positions, padding included.
    return jnp.mean(h_tok, axis=-1), mask
  tm = require(_WHAT, ctx, "token_mask_BxGxT", sizes)
  _checks.check_bool("token_mask_BxGxT", tm, what=_WHAT)
  h = _stats.masked_mean(h_tok, tm, axis=-1)
  return h, mask & jnp.any(tm, axis=-1)


@register(_WHAT, min_group_size=2, requires=("entropy_BxG",))
def edge_eda(*, mean_over: str = "batch", entropy_mean: str = "masked",
             entropy_eps: float = 1e-6, max_weight: float | None = None,
             norm_by_std: bool = True, std: str = "unbiased",
             eps: float = 1e-4, eps_placement: str = "std",
             std_floor: float = 0.0,
             singleton: str = "zero") -> AdvantageTransform:
  """EDGE-GRPO EDA: GRPO advantages scaled by ``Pbar / P_i`` (entropy).

  See Zhang et al., "EDGE-GRPO: Entropy-Driven GRPO with Guided Error
  Correction for Advantage Diversity" (arXiv 2507.21848); authors' code
  ``ZhangXJ199/EDGE-GRPO`` (TRL-based). ``A_i = (r_i - mean_g) / (std_g +
  1e-4)`` (TRL) and ``Ahat_i = A_i * Pbar / P_i``, where ``P_i`` is sample
  i's mean token entropy under the current policy and ``Pbar`` the mean of
  ``P_j`` over the valid samples of the batch (the authors' gathered
  micro-batch). Confident samples (low ``P_i``) get larger advantages, of
  either sign. An all-equal group gives 0 (GEC, the host-side error
  injection of the paper, is not an array op and not part of this
  transform).

  Padding: the authors' code averages the entropy over all T positions,
  padding included. Here ``P_i`` is padding invariant by default: pass
  ``entropy_BxG`` already averaged over each sample's valid tokens, or the
  per-token ``entropy_BxGxT`` with ``token_mask_BxGxT`` (masked mean; the
  paper's reading). ``entropy_mean="unmasked"`` reproduces the code's
  unmasked mean from ``entropy_BxGxT`` (not padding invariant). A sample
  with no valid token gets weight 1 and stays out of ``Pbar``.

  Division hazard (mean entropy near 0): the weight is ``(Pbar + e) / (P_i +
  e)`` with ``e = entropy_eps``, entropies floored at 0, so it is finite
  everywhere and 1 when every entropy is 0; ``max_weight`` optionally caps
  it. ``Pbar`` is under ``stop_gradient`` as in the authors' code; ``P_i``
  is not (gradients flow through ``1 / P_i`` if the caller differentiates
  through the entropy, as the code does); wrap the input in
  ``jax.lax.stop_gradient`` to detach it.

  Args:
    mean_over: ``"batch"``: ``Pbar`` over all valid samples of the batch (the
      code's gathered micro-batch); ``"group"``: over the sample's group
      (what the released script's one-group micro-batch amounts to).
    entropy_mean: how ``entropy_BxGxT`` is averaged: ``"masked"`` (valid
      tokens only; default) or ``"unmasked"`` (all T positions, the code).
      Unused with ``entropy_BxG``.
    entropy_eps: e > 0 in ``(Pbar + e) / (P_i + e)`` (not in the paper;
      the guard against a mean entropy near 0).
    max_weight: if not None, the weight is capped here (not in the paper).
    norm_by_std: divide the GRPO advantage by the group std (TRL
      ``scale_rewards``); False gives ``r - mean_g``.
    std: ``"unbiased"`` (TRL) or ``"population"``.
    eps: added to the std (TRL: 1e-4), or to the variance.
    eps_placement: ``"std"`` or ``"var"``.
    std_floor: the std is floored here first.
    singleton: a one-sample group gives ``"zero"`` or its ``"raw"`` reward
      (mean 0, std 1) times the weight.

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``; needs
    ``entropy_BxG`` in ctx, or ``entropy_BxGxT`` (with ``token_mask_BxGxT``
    unless ``entropy_mean="unmasked"``).
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  _checks.check_choice("mean_over", mean_over, MEAN_OVER, what=_WHAT)
  _checks.check_choice("entropy_mean", entropy_mean, ENTROPY_MEANS,
                       what=_WHAT)
  _checks.check_nonnegative("entropy_eps", entropy_eps, what=_WHAT)
  if _checks.is_concrete(entropy_eps) and not float(entropy_eps) > 0:
    raise ValueError(f"{_WHAT}: entropy_eps must be > 0, got "
                     f"{entropy_eps!r}.")
  if max_weight is not None:
    _checks.check_nonnegative("max_weight", max_weight, what=_WHAT)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    h, has_h = _sample_entropy(r, mask, ctx, sizes, entropy_mean)
    h = jnp.maximum(jnp.where(has_h, h, 0), 0)
    axis = None if mean_over == "batch" else -1
    h_bar = jax.lax.stop_gradient(
        _stats.masked_mean(h, has_h, axis=axis, keepdims=True))
    den = h + entropy_eps
    weight = (h_bar + entropy_eps) / jnp.where(den > 0, den, 1)
    weight = jnp.where(has_h & (den > 0), weight, 1)
    if max_weight is not None:
      weight = jnp.minimum(weight, max_weight)
    adv, st = _stats.group_zscore(
        r, mask, std=std, singleton=singleton, norm_by_std=norm_by_std,
        eps=eps, eps_placement=eps_placement, std_floor=std_floor)
    return _stats.finish(adv * weight, mask, st, singleton, r.dtype)

  return stateless(update_fn)
