"""Outcome-level baseline estimators: one scalar advantage per sample.

Formulas follow the project's estimator reference (§1). Every convention
that differs between papers and peers (std type, where eps goes, what a group
with one valid sample gives) is a keyword argument; ``PRESETS`` in
``_registry`` reproduces verl and TRL.
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


@register("grpo", min_group_size=2)
def grpo(*, norm_by_std: bool = True, std: str = "unbiased",
         eps: float = 1e-6, eps_placement: str = "std",
         std_floor: float = 0.0, singleton: str = "zero",
         ) -> AdvantageTransform:
  """GRPO: ``A_i = (r_i - mean_g) / (std_g + eps)``.

  See Shao et al., DeepSeekMath (arXiv 2402.03300). Defaults: unbiased std
  and eps 1e-6 added to the std, as verl; ``get("grpo", preset="trl")`` gives
  TRL's eps 1e-4. A group with one valid sample gives 0 by default.

  Args:
    norm_by_std: divide by the group std (verl ``norm_adv_by_std_in_grpo``);
      False gives ``r - mean_g`` exactly (Dr.GRPO).
    std: ``"unbiased"`` (n - 1, ``torch.std``) or ``"population"`` (n).
    eps: added to the std, or to the variance (see ``eps_placement``).
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``: ``/sqrt(var + eps)``.
    std_floor: the std is floored here first (1e-3 reproduces verl's
      vectorized variance floor and NeMo RL's fix).
    singleton: a group with one valid sample gives ``"zero"`` or, as in
      verl, its ``"raw"`` reward (mean 0, std 1: ``r / (1 + eps)``).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG)`` returns ``[B, G]`` advantages.
  """
  _stats.check_conventions("grpo", std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("grpo", rewards_BxG, mask_BxG, min_group_size=2)
    adv, st = _stats.group_zscore(
        r, mask, std=std, singleton=singleton, norm_by_std=norm_by_std,
        eps=eps, eps_placement=eps_placement, std_floor=std_floor)
    return _stats.finish(adv, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("dr_grpo", min_group_size=2)
def dr_grpo(*, singleton: str = "zero") -> AdvantageTransform:
  """Dr.GRPO: ``A_i = r_i - mean_g``, no division by the std.

  See Liu et al., "Understanding R1-Zero-Like Training" (arXiv 2503.20783).
  The paper's other half, a constant loss normaliser, is a loss aggregation.

  Args:
    singleton: a one-sample group gives ``"zero"`` or its ``"raw"`` reward.

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("dr_grpo", singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("dr_grpo", rewards_BxG, mask_BxG, min_group_size=2)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    return _stats.finish(st.centered, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("rloo", min_group_size=2)
def rloo(*, singleton: str = "zero") -> AdvantageTransform:
  """RLOO: ``A_i = r_i - mean_{j != i} r_j = n/(n-1) (r_i - mean_g)``.

  See Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!",
  and Ahmadian et al., "Back to Basics" (arXiv 2402.14740). n is the number
  of valid samples in the group.

  Args:
    singleton: a one-sample group gives ``"zero"`` (verl ``rloo_vectorized``,
      TRL) or its ``"raw"`` reward (verl ``rloo`` loop).

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("rloo", singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("rloo", rewards_BxG, mask_BxG, min_group_size=2)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    n = st.count
    factor = jnp.where(n > 1, n / jnp.maximum(n - 1, 1), 1)
    return _stats.finish(factor * st.centered, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("opo", min_group_size=2, requires=("lengths_BxG",))
def opo(*, singleton: str = "zero") -> AdvantageTransform:
  """OPO: baseline is the length-weighted group mean, ``sum L s / sum L``.

  See Hao et al., "On-Policy RL with Optimal Reward Baseline"
  (arXiv 2505.23585); verl ``opo``. Needs ``lengths_BxG`` in ctx (or
  ``token_mask_BxGxT``, from which the lengths are counted).

  Args:
    singleton: a one-sample group gives ``"zero"`` or its ``"raw"`` reward
      (verl: baseline 0).

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("opo", singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare("opo", rewards_BxG, mask_BxG, min_group_size=2)
    lengths = optional("opo", ctx, "lengths_BxG", sizes)
    if lengths is None:
      if ctx.get("token_mask_BxGxT") is None:
        require("opo", ctx, "lengths_BxG", sizes)  # raises, naming the key
      lengths = jnp.sum(require("opo", ctx, "token_mask_BxGxT", sizes),
                        axis=-1)
    w = jnp.where(mask, lengths.astype(r.dtype), 0)
    total = jnp.sum(w, axis=-1, keepdims=True)
    base = jnp.sum(w * jnp.where(mask, r, 0), axis=-1,
                   keepdims=True) / jnp.where(total > 0, total, 1)
    st = _stats.group_stats(r, mask)
    if singleton == "raw":
      base = jnp.where(st.count == 1, 0, base)
    return _stats.finish(r - base, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("gpg", min_group_size=2)
def gpg(*, f_norm: float = 1.0, singleton: str = "zero") -> AdvantageTransform:
  """GPG: ``A_i = alpha (r_i - mean_g) / f_norm``, alpha = N / #(r != 0).

  See Chu et al., "GPG: A Simple and Strong Reinforcement Learning Baseline
  for Model Reasoning" (arXiv 2504.02546); verl ``gpg``. alpha counts the
  valid samples of the whole batch over those with a non-zero reward (at
  least 1), compensating for the zero-reward samples.

  Args:
    f_norm: a constant divisor (verl: 1.0).
    singleton: a one-sample group gives ``"zero"`` or ``alpha * r``
      (``"raw"``, verl).

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("gpg", singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("gpg", rewards_BxG, mask_BxG, min_group_size=2)
    n_valid = jnp.sum(mask, dtype=r.dtype)
    n_nonzero = jnp.sum(mask & (r != 0), dtype=r.dtype)
    alpha = n_valid / jnp.maximum(n_nonzero, 1)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    adv = alpha * st.centered / f_norm
    return _stats.finish(adv, mask, st, singleton, r.dtype)

  return stateless(update_fn)


@register("grpo_passk", min_group_size=2)
def grpo_passk(*, norm_by_std: bool = True, std: str = "unbiased",
               eps: float = 1e-6) -> AdvantageTransform:
  """GRPO pass@k: only each group's best sample gets an advantage.

  verl ``grpo_passk``: the best valid sample gets ``(r_max - r_2nd) /
  (std_g + eps)`` (or the bare margin without ``norm_by_std``); all others
  get 0. A tie at the maximum gives a margin of 0; a group with fewer than
  two valid samples gives 0 (verl raises on such a group).

  Args:
    norm_by_std: divide the margin by the group std.
    std: ``"unbiased"`` or ``"population"``.
    eps: added to the std.

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("grpo_passk", std=std, eps=eps)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, sizes = prepare("grpo_passk", rewards_BxG, mask_BxG,
                             min_group_size=2)
    # Two max passes instead of a top-k sort (much faster on CPU).
    masked = jnp.where(mask, r, -jnp.inf)
    best = jnp.argmax(masked, axis=-1, keepdims=True)
    is_best = jnp.arange(sizes["G"])[None, :] == best
    first = jnp.max(masked, axis=-1, keepdims=True)
    second = jnp.max(jnp.where(is_best, -jnp.inf, masked), axis=-1,
                     keepdims=True)
    st = _stats.group_stats(r, mask, std=std)
    margin = jnp.where(st.count >= 2, first - second, 0)
    if norm_by_std:
      margin = margin / (st.std + eps)
    adv = jnp.where(is_best, margin, 0)
    return _stats.finish(adv, mask, dtype=r.dtype)

  return stateless(update_fn)


@register("batch_std", min_group_size=2)
def batch_std(*, std: str = "unbiased", eps: float = 1e-4,
              singleton: str = "zero") -> AdvantageTransform:
  """Group-mean baseline, batch-std scale: ``(r - mean_g) / (std_batch + eps)``.

  TRL ``scale_rewards="batch"``; the "group mean, batch std" normalisation
  recommended as Lite PPO by Liu et al., "Tricks or Traps? A Deep Dive into
  RL for LLM Reasoning" (arXiv 2508.08221). The std is that of the raw
  rewards over all valid samples of the batch.

  Args:
    std: ``"unbiased"`` (TRL) or ``"population"``.
    eps: added to the batch std (TRL: 1e-4).
    singleton: a one-sample group gives ``"zero"`` or ``r / (std + eps)``.

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """
  _stats.check_conventions("batch_std", std=std, eps=eps, singleton=singleton)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("batch_std", rewards_BxG, mask_BxG,
                         min_group_size=2)
    st = _stats.singleton_fix(_stats.group_stats(r, mask), singleton, r)
    sd = _stats.masked_std(r, mask, _stats.masked_mean(r, mask), std=std)
    return _stats.finish(st.centered / (sd + eps), mask, st, singleton,
                         r.dtype)

  return stateless(update_fn)


@register("remax", requires=("greedy_rewards_B",))
def remax() -> AdvantageTransform:
  """ReMax: the baseline is the reward of a greedy rollout of the prompt.

  See Li et al., "ReMax: A Simple, Effective, and Efficient Reinforcement
  Learning Method for Aligning Large Language Models" (arXiv 2310.10505);
  verl ``remax``. ``A_i = r_i - b``, with ``b`` = ``greedy_rewards_B`` from
  ctx. (A KL term folded into the reward belongs to the loss side.)

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``.
  """

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare("remax", rewards_BxG, mask_BxG)
    base = require("remax", ctx, "greedy_rewards_B", sizes)
    _checks.check_floating("greedy_rewards_B", base, what="remax")
    return _stats.finish(r - base[:, None].astype(r.dtype), mask,
                         dtype=r.dtype)

  return stateless(update_fn)


@register("gdpo", min_group_size=2, input_name="rewards_BxGxK")
def gdpo(*, weights: tuple[float, ...] | None = None, std: str = "unbiased",
         eps: float = 1e-4) -> AdvantageTransform:
  """GDPO: z-score each reward function within its group, sum, then z-score.

  TRL ``multi_objective_aggregation="normalize_then_sum"`` (Group
  reward-Decoupled normalization Policy Optimization). Input
  ``rewards_BxGxK`` holds K reward functions; NaN marks a function that does
  not apply to a sample. Per function k, ``z_k = (r_k - mean_gk) / (std_gk +
  eps)`` over the group's samples where it applies; then ``s = sum_k w_k z_k``
  and ``A = (s - mean_batch) / (std_batch + eps)`` over the scorable samples.
  A sample for which no function applies ("unscorable") gets 0 and does not
  enter the batch statistics. Output is ``[B, G]``.

  Args:
    weights: K weights (default all 1).
    std: ``"unbiased"`` (TRL's nanstd) or ``"population"``.
    eps: added to both stds (TRL: 1e-4).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxGxK, ...)``.
  """
  _stats.check_conventions("gdpo", std=std, eps=eps)

  def update_fn(rewards_BxGxK, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, sizes = prepare("gdpo", rewards_BxGxK, mask_BxG,
                             name="rewards_BxGxK", min_group_size=2)
    if weights is None:
      w = jnp.ones((sizes["K"],), r.dtype)
    else:
      w = jnp.asarray(weights, r.dtype)
      _checks.check_named("weights_K", w, sizes, what="gdpo")
    valid = mask[..., None] & ~jnp.isnan(r)
    mean = _stats.masked_mean(r, valid, axis=1, keepdims=True)
    sd = _stats.masked_std(r, valid, mean, std=std, axis=1, keepdims=True)
    z = jnp.where(valid, (r - mean) / (sd + eps), 0)
    s = jnp.sum(z * w[None, None, :], axis=-1)
    scorable = jnp.any(valid, axis=-1)
    return _stats.finish(_whiten_std(s, scorable, std=std, eps=eps), scorable,
                         dtype=r.dtype)

  return stateless(update_fn)


def _whiten_std(x, valid, *, std, eps):
  mean = _stats.masked_mean(x, valid)
  return (x - mean) / (_stats.masked_std(x, valid, mean, std=std) + eps)
