"""S-GRPO: GRPO advantages reweighted for symmetric reward noise.

See Shen et al., "Mitigating Think-Answer Mismatch in LLM Reasoning Through
Noise-Aware Advantage Reweighting" (S-GRPO, arXiv 2508.05928); the
project's estimator reference, §2.8.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

_WHAT = "s_grpo"


def noise_weight(k, n, noise_rate, *, weight_eps=1e-8) -> jax.Array:
  """The MSE-optimal group weight ``w*(n, k, p)`` of S-GRPO.

  ``rbar = k / n``; ``t = clip((rbar - p) / (1 - 2p), 0, 1)`` (the de-noised
  success rate); ``w* = (1 - 2p) t (1 - t) / (sqrt(rbar (1 - rbar) + eps)
  sqrt(t (1 - t) + eps))``. A group with ``n = 0`` gets 0, and so does
  ``p >= 0.5`` (no information survives symmetric flips at rate 1/2).

  Args:
    k: number of successes (any shape; broadcasts with ``n``).
    n: number of valid samples.
    noise_rate: the flip rate p in [0, 0.5).
    weight_eps: eps inside both square roots (reference: 1e-8).

  Returns:
    ``w*`` with the broadcast shape of ``k`` and ``n``, in ``k``'s dtype if
    floating (float32 otherwise).

  Example: ``noise_weight(1., 8., 0.1)`` is about 0.4209.
  """
  k = jnp.asarray(k)
  dtype = k.dtype if jnp.issubdtype(k.dtype, jnp.floating) else jnp.float32
  k = k.astype(dtype)
  n = jnp.asarray(n).astype(dtype)
  p = jnp.asarray(noise_rate).astype(dtype)
  n_safe = jnp.maximum(n, 1)
  rbar = k / n_safe
  scale = 1 - 2 * p
  ok = scale > 0
  # (k - n p) / (n (1 - 2p)) rather than (rbar - p) / (1 - 2p): exact at
  # the boundaries rbar = p and rbar = 1 - p in float32 (t = 0 or 1).
  t = jnp.clip((k - n * p) / jnp.where(ok, n_safe * scale, 1), 0, 1)
  num = jnp.where(ok, scale, 0) * t * (1 - t)
  den = (jnp.sqrt(rbar * (1 - rbar) + weight_eps)
         * jnp.sqrt(t * (1 - t) + weight_eps))
  # den = 0 only with weight_eps = 0 at t in {0, 1}, where w* = 0.
  return jnp.where((n > 0) & (den > 0), num / jnp.where(den > 0, den, 1), 0)


@register(_WHAT, min_group_size=2)
def s_grpo(*, noise_rate: float = 0.1, success_threshold: float = 0.0,
           norm_by_std: bool = True, std: str = "unbiased",
           eps: float = 1e-8, eps_placement: str = "std",
           weight_eps: float = 1e-8) -> AdvantageTransform:
  """S-GRPO: ``A_i = w*(n, k, p) (r_i - mean_g) / (std_g + eps)``.

  See Shen et al., "Mitigating Think-Answer Mismatch in LLM Reasoning
  Through Noise-Aware Advantage Reweighting" (Stable GRPO, arXiv
  2508.05928); the authors' Oat-based code
  (``train_S-GRPO.py::group_weight``, critic type "drgrpo"). Under symmetric
  reward flips at rate p, each group's GRPO advantage is scaled by the
  MSE-optimal ``w*`` of ``noise_weight``: with ``k`` the group's successes
  (``r > success_threshold``) among its ``n`` valid samples, ``rbar = k/n``,
  ``t = clip((rbar - p)/(1 - 2p), 0, 1)`` and ``w* = (1 - 2p) t (1 - t) /
  (sqrt(rbar(1 - rbar) + 1e-8) sqrt(t(1 - t) + 1e-8))``.

  Worked check (reference): p = 0.1, n = 8, k = 1 gives ``w* ~= 0.42``.
  Groups whose ``rbar <= p`` or ``rbar >= 1 - p`` get ``w* = 0`` and thus a
  finite 0; so does every group of one valid sample (``rbar`` is 0 or 1), so
  there is no singleton option. ``p = 0`` recovers GRPO (``w* ~= 1`` for
  ``0 < k < n``).

  The centring uses the group mean of the rewards (the code's GRPO step);
  for binary rewards it equals ``rbar``. The paper's loss uses Dr.GRPO's
  constant normaliser, a loss-side choice (``losses``).

  Args:
    noise_rate: the symmetric flip rate p in [0, 0.5) (scripts: 0.1). May
      be traced (``inject_hyperparams``); a traced ``p >= 0.5`` gives 0.
    success_threshold: a sample succeeds iff ``r > success_threshold``
      (reference: ``r > 0``).
    norm_by_std: divide by the group std (the code's "drgrpo" critic type
      does); False gives ``w* (r - mean_g)``.
    std: ``"unbiased"`` (reference) or ``"population"``.
    eps: added to the std (reference: 1e-8), or to the variance (see
      ``eps_placement``).
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``: ``/sqrt(var +
      eps)``.
    weight_eps: the eps inside both square roots of ``w*`` (1e-8).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG)`` returns ``[B, G]`` advantages. No context inputs.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement)
  _checks.check_nonnegative("weight_eps", weight_eps, what=_WHAT)
  _checks.check_nonnegative("noise_rate", noise_rate, what=_WHAT)
  if _checks.is_concrete(noise_rate) and not float(noise_rate) < 0.5:
    raise ValueError(
        f"{_WHAT}: noise_rate must be in [0, 0.5), got {noise_rate!r}.")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    # w* = 0 for a one-sample group, so the "zero" policy changes nothing.
    adv, st = _stats.group_zscore(r, mask, std=std, singleton="zero",
                                  norm_by_std=norm_by_std, eps=eps,
                                  eps_placement=eps_placement)
    k = jnp.sum(mask & (r > success_threshold), axis=-1, keepdims=True,
                dtype=r.dtype)
    w = noise_weight(k, st.count, noise_rate, weight_eps=weight_eps)
    # w* = 0 gives 0 even where the std division is 0/0 (eps = 0).
    adv = jnp.where(w != 0, w * adv, 0)
    return _stats.finish(adv, mask, st, "zero", r.dtype)

  return stateless(update_fn)
