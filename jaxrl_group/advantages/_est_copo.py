"""COPO: local (GRPO) and global (prompt-level) advantages, blended by the
group's answer-consistency entropy.

See Han et al., "COPO: Consistency-Aware Policy Optimization"
(arXiv 2508.04138); the project's estimator reference, §2.10.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

_WHAT = "copo"


class CopoParts(NamedTuple):
  """The pieces of COPO's objective, for an exact loss-level blend.

  Attributes:
    local: ``[B, G]`` GRPO advantages (0 at masked samples).
    global_: ``[B, G]`` the prompt-level advantage copied to each valid
      sample of the prompt (0 at masked samples).
    weight_local: ``[B, G]`` the local loss weight ``w``.
    weight_global: ``[B, G]`` the global loss weight ``1 - w`` (computed as
      ``sigmoid(-x)``, accurate where ``w`` is close to 1).
    entropy: ``[B]`` the answer-consistency entropy of each group.
  """

  local: jax.Array
  global_: jax.Array
  weight_local: jax.Array
  weight_global: jax.Array
  entropy: jax.Array


def consistency_entropy(answer_ids_BxG: jax.Array, mask_BxG: jax.Array, *,
                        log_base=2.0, dtype=jnp.float32) -> jax.Array:
  """Entropy of the empirical answer distribution of each group, ``[B]``.

  ``H = -sum_tau p(tau) log p(tau) = -(1/n) sum_i log(c_i / n)``, where
  ``c_i`` counts the valid samples with sample i's answer id and ``n`` the
  valid samples. An empty group gives 0.
  """
  same = answer_ids_BxG[:, :, None] == answer_ids_BxG[:, None, :]
  pair = same & mask_BxG[:, :, None] & mask_BxG[:, None, :]
  c = jnp.sum(pair, axis=-1, dtype=dtype)
  n = jnp.sum(mask_BxG, axis=-1, keepdims=True, dtype=dtype)
  safe_n = jnp.maximum(n, 1)
  logp = jnp.log(jnp.where(mask_BxG, c, 1) / safe_n)
  h = -jnp.sum(jnp.where(mask_BxG, logp, 0), axis=-1) / safe_n[:, 0]
  return h / jnp.log(jnp.asarray(log_base, dtype))


def copo_parts(rewards_BxG: jax.Array, answer_ids_BxG: jax.Array,
               mask_BxG: jax.Array, *, gamma=20.0, rho=1.5, log_base=2.0,
               force_global_if_zero: bool = False,
               entropy_discount: bool = False, norm_by_std: bool = True,
               std: str = "unbiased", eps=1e-6, eps_placement: str = "std",
               global_std: str = "unbiased", global_eps=1e-6,
               singleton: str = "zero") -> CopoParts:
  """Local and global advantages and the local weight (see ``copo``)."""
  r, mask = rewards_BxG, mask_BxG
  local, st = _stats.group_zscore(r, mask, std=std, singleton=singleton,
                                  norm_by_std=norm_by_std, eps=eps,
                                  eps_placement=eps_placement)
  local = _stats.finish(local, mask, st, singleton, r.dtype)

  h = consistency_entropy(answer_ids_BxG, mask, log_base=log_base,
                          dtype=r.dtype)
  # The prompt's return R(q): its mean reward, optionally discounted by the
  # normalised entropy (the code's reward_coef, off in its scripts).
  has = st.count[:, 0] > 0
  ret = st.mean[:, 0]
  if entropy_discount:
    n = st.count[:, 0]
    log_n = jnp.log(jnp.maximum(n, 2)) / jnp.log(
        jnp.asarray(log_base, r.dtype))
    coef = 1 - (1 - 1 / jnp.maximum(n, 1)) * h / log_n
    ret = ret * jnp.where(n > 1, coef, 1)
  g_mean = _stats.masked_mean(ret, has)
  glob = ret - g_mean
  if norm_by_std:
    g_sd = _stats.masked_std(ret, has, g_mean, std=global_std)
    glob = glob / (g_sd + global_eps)
  glob = jnp.where(mask, glob[:, None], 0).astype(r.dtype)

  x = jnp.asarray(gamma, r.dtype) * (h - rho)
  x = jnp.broadcast_to(x[:, None], r.shape).astype(r.dtype)
  w, w_glob = jax.nn.sigmoid(x), jax.nn.sigmoid(-x)
  if force_global_if_zero:
    w = jnp.where(local == 0, 0, w)
    w_glob = jnp.where(local == 0, 1, w_glob)
  return CopoParts(local, glob, w, w_glob, h)


@register(_WHAT, min_group_size=2, requires=("answer_ids_BxG",))
def copo(*, gamma: float = 20.0, rho: float = 1.5, log_base: float = 2.0,
         force_global_if_zero: bool = False, entropy_discount: bool = False,
         norm_by_std: bool = True, std: str = "unbiased", eps: float = 1e-6,
         eps_placement: str = "std", global_std: str = "unbiased",
         global_eps: float = 1e-6,
         singleton: str = "zero") -> AdvantageTransform:
  """COPO: ``A = w A_local + (1 - w) A_global``, ``w = sigmoid(g (H - rho))``.

  See Han et al., "COPO: Consistency-Aware Policy Optimization"
  (arXiv 2508.04138); authors' code ``hijih/copo-code``
  (``verl/trainer/ppo/core_algos.py``: ``compute_score_global``,
  ``compute_grpo_outcome_advantage_with_global`` and the policy loss).

  * Local: GRPO, ``(r_i - mean_g) / (std_g + 1e-6)`` (unbiased std, verl).
  * Global: each prompt's return ``R(q)`` = its group's mean reward is
    standardised over the prompts of the batch, ``(R(q) - mean_q R) /
    (std_q R + 1e-6)`` (unbiased std over prompts, as the code's
    ``torch.std``), and applied to every valid sample of q.
  * Consistency entropy ``H(q)`` of the group's final answers
    (``answer_ids_BxG``: equal ids = equal answers, e.g. canonicalised on
    the host and factorised), in bits by default (the code: ``log2``; it
    adds 1e-8 inside the log, omitted here).
  * The code weights the local loss by ``w = sigmoid(k (H - b))`` and the
    global loss by ``1 - w``: diverse groups train locally, consistent
    (homogeneous) groups globally.

  As an advantage transform the blend is applied to the advantages. That
  equals the code's blend of the two PPO losses wherever both advantages
  have the same sign or the ratio is not clipped (the clipped surrogate is
  linear in A for a fixed sign); elsewhere it is an approximation. For the
  exact loss blend use ``copo_parts`` and two surrogate terms.

  Args:
    gamma: the sigmoid's slope (reference and scripts: 20).
    rho: the entropy threshold (reference: 1.5 [summary]; the code's
      scripts use ``b = 0.5`` or 1, in bits).
    log_base: base of the entropy's logarithm (code: 2).
    force_global_if_zero: the code's ``"soft-with-forced"`` mode: a sample
      whose local advantage is exactly 0 (e.g. any sample of an all-equal
      group) gets ``w = 0``, i.e. the full global advantage. Default False
      (the code's ``"only-soft"``).
    entropy_discount: the code's ``reward_coef_flg``: ``R(q) = mean_g r (1 -
      lambda H)`` with ``lambda = (1 - 1/n) / log(n)`` (same base as H).
      Default False (as in the scripts).
    norm_by_std: divide both advantages by their std; False gives the
      code's ``r - mean_g`` and ``R - mean_q R``.
    std: std type of the local (group) std.
    eps: added to the local std (verl: 1e-6), or to the variance.
    eps_placement: ``"std"`` or ``"var"`` (local).
    global_std: std type over the prompts (code: unbiased).
    global_eps: added to the std over the prompts (code: 1e-6). With a
      single prompt the global advantage is 0.
    singleton: a group with one valid sample has local advantage
      ``"zero"`` or its ``"raw"`` reward (verl); its prompt still enters
      the global statistics (``H = 0``, so ``w ~= 0``).

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G]``; needs
    ``answer_ids_BxG`` (integer answer ids) in ctx.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton)
  _checks.check_choice("global_std", global_std, _stats.STD_TYPES,
                       what=_WHAT)
  _checks.check_nonnegative("global_eps", global_eps, what=_WHAT)
  if _checks.is_concrete(log_base) and not (
      float(log_base) > 0 and float(log_base) != 1):
    raise ValueError(f"{_WHAT}: log_base must be > 0 and != 1, got "
                     f"{log_base!r}.")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    ans = require(_WHAT, ctx, "answer_ids_BxG", sizes)
    _checks.check_integer("answer_ids_BxG", ans, what=_WHAT)
    parts = copo_parts(
        r, ans, mask, gamma=gamma, rho=rho, log_base=log_base,
        force_global_if_zero=force_global_if_zero,
        entropy_discount=entropy_discount, norm_by_std=norm_by_std, std=std,
        eps=eps, eps_placement=eps_placement, global_std=global_std,
        global_eps=global_eps, singleton=singleton)
    adv = (parts.weight_local * parts.local
           + parts.weight_global * parts.global_)
    return _stats.finish(adv, mask, dtype=r.dtype)

  return stateless(update_fn)
