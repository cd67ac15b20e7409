"""GREAM SRPO: GRPO z-score of partial rewards plus an analytic pass@k bonus.

See Hong et al., GREAM (arXiv 2510.20815); the project's estimator
reference, §2.14.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register


def comb_ratio(a: jax.Array, b: jax.Array, k) -> jax.Array:
  """``C(a, k) / C(b, k)`` for integer-valued ``a <= b`` with ``b >= k``.

  Follows scipy ``comb``: ``C(a, k) = 0`` when ``a < k`` (negative ``a``
  included). Computed as the product ``prod_{j<k} (a - j) / (b - j)``, so
  ``a == b`` gives exactly 1 and ``a < k`` exactly 0. ``k`` may be traced
  (a ``fori_loop``). Entries with ``b < k`` are not meaningful (they give a
  finite value; mask them).
  """

  def body(j, acc):
    j = jnp.asarray(j, a.dtype)
    den = b - j
    return acc * (a - j) / jnp.where(den > 0, den, 1)

  prod = jax.lax.fori_loop(0, k, body, jnp.ones_like(a))
  return jnp.where(a >= k, prod, 0)


def passk_bonus(hit_BxG: jax.Array, mask_BxG: jax.Array, k, *, eps=1e-6,
                dtype=jnp.float32) -> jax.Array:
  """Analytic pass@k advantage of each sample from its group's hit count.

  With ``n`` valid samples and ``c`` hits, ``rho = 1 - C(n-c, k)/C(n, k)``
  (pass@k), ``s = sqrt(rho (1 - rho))``; a hit gets ``(1 - rho)/(s + eps)``,
  a miss ``(1 - rho - C(n-c-1, k-1)/C(n-1, k-1))/(s + eps)``. Groups with
  fewer than ``k`` valid samples give 0 (the pass@k of ``k >= n`` samples is
  ``1[c > 0]``, which has ``s = 0`` and a 0 numerator for every sample).

  Args:
    hit_BxG: bool, exact hits.
    mask_BxG: bool, valid samples.
    k: the pass@k size (int >= 1, may be traced).
    eps: added to ``s``.
    dtype: the output's floating dtype.

  Returns:
    ``[B, G]`` bonuses (0 at masked entries).
  """
  hit = hit_BxG & mask_BxG
  n = jnp.sum(mask_BxG, axis=-1, keepdims=True, dtype=dtype)
  c = jnp.sum(hit, axis=-1, keepdims=True, dtype=dtype)
  kk = jnp.asarray(k, dtype)
  rho = 1 - comb_ratio(n - c, n, k)
  s = jnp.sqrt(jnp.clip(rho * (1 - rho), 0))
  miss_ratio = comb_ratio(n - c - 1, n - 1, k - 1)
  bonus = jnp.where(hit, 1 - rho, 1 - rho - miss_ratio) / (s + eps)
  return jnp.where(mask_BxG & (n >= kk), bonus, 0).astype(dtype)


@register("srpo_bonus", min_group_size=2)
def srpo_bonus(*, k: int = 4, bonus_coef: float = 1.0,
               hit_threshold: float = 1.0, bonus_eps: float = 1e-6,
               norm_by_std: bool = True, std: str = "unbiased",
               eps: float = 1e-6, eps_placement: str = "std",
               singleton: str = "zero") -> AdvantageTransform:
  """GREAM SRPO: ``A_i = z_i + bonus_i``, a pass@k bonus on exact hits.

  See Hong et al., GREAM, Sparse-Regularized Group Policy Optimization
  (arXiv 2510.20815); its code calls this estimator ``passk``
  ("Bonus-Calibrated Group Advantage Estimation"; the mapping of the paper's
  names to code functions is the reference's [reading]). On the partial-credit
  rewards (prefix-match scores in [0, 1], 1.0 for an exact hit),
  ``z_i = (r_i - mean_g) / (std_g + 1e-6)`` (unbiased std); ``c`` counts the
  group's exact hits, ``n`` its valid samples, and the analytic pass@k
  advantage (``passk_bonus``) adds, with ``rho = 1 - C(n-c, k)/C(n, k)`` and
  ``s = sqrt(rho (1 - rho))``,
  ``(1 - rho)/(s + 1e-6)`` to a hit and
  ``(1 - rho - C(n-c-1, k-1)/C(n-1, k-1))/(s + 1e-6)`` to a miss.

  Edge cases: ``c = 0`` or ``c = n`` gives bonus 0; ``c >= n - k + 1`` gives
  misses 0. GREAM uses G = 10 >= k; with padding a group may have ``n < k``
  valid samples, where the source's formula is 0/0: such a group gets bonus
  0 (the limit: pass@k of all ``n`` samples carries no signal).

  Args:
    k: the pass@k size K (GREAM hard-codes 4). An int >= 1; may be traced.
    bonus_coef: weight of the bonus (GREAM: 1, a plain sum).
    hit_threshold: a sample is an exact hit iff ``r >= hit_threshold``; for
      GREAM's rewards (at most 1.0) the default 1.0 is its ``r == 1.0``.
    bonus_eps: added to ``s`` in the bonus (GREAM: 1e-6).
    norm_by_std: divide the centred partial rewards by the group std.
    std: ``"unbiased"`` (GREAM) or ``"population"``.
    eps: added to the std or to the variance (``eps_placement``).
    eps_placement: ``"std"`` (GREAM) or ``"var"``.
    singleton: the z-score part of a one-sample group is ``"zero"`` or
      ``"raw"`` (verl: mean 0, std 1); its bonus is always 0.

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  what = "srpo_bonus"
  _stats.check_conventions(what, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton)
  _checks.check_nonnegative("bonus_eps", bonus_eps, what=what)
  if _checks.is_concrete(k):
    if int(k) != k or k < 1:
      raise ValueError(f"{what}: k must be an integer >= 1, got {k!r}.")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare(what, rewards_BxG, mask_BxG, min_group_size=2)
    z, st = _stats.group_zscore(
        r, mask, std=std, singleton=singleton, norm_by_std=norm_by_std,
        eps=eps, eps_placement=eps_placement)
    z = _stats.finish(z, mask, st, singleton, r.dtype)
    kk = jnp.asarray(k).astype(jnp.int32)
    bonus = passk_bonus(r >= hit_threshold, mask, kk, eps=bonus_eps,
                        dtype=r.dtype)
    return _stats.finish(z + bonus_coef * bonus, mask, dtype=r.dtype)

  return stateless(update_fn)
