"""QAE: the group K-quantile of the rewards replaces the group-mean baseline.

See Wu et al., "Quantile Advantage Estimation for Entropy-Safe Reasoning"
(arXiv 2509.22611); the project's estimator reference, §2.1.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

QUANTILE_METHODS = ("linear", "inverted_cdf")


def masked_quantile(x_BxG: jax.Array, mask_BxG: jax.Array, k, *,
                    method: str = "linear") -> jax.Array:
  """The k-quantile of each group's valid entries, ``[B, 1]``.

  ``method="linear"`` interpolates at position ``k (n - 1)`` of the sorted
  values (``torch.quantile``'s and numpy's default); ``"inverted_cdf"`` is
  ``inf{x : F(x) >= k}``, the ``ceil(k n)``-th smallest value (numpy's
  ``method="inverted_cdf"``). ``ceil`` is taken with a tolerance of a few
  ulps, so that ``k n`` meant to be an integer (0.7 * 10) is not rounded up
  by floating-point error. A group without valid entries gives 0.

  Args:
    x_BxG: values.
    mask_BxG: bool, valid entries.
    k: the quantile level in [0, 1]; may be traced.
    method: ``"linear"`` or ``"inverted_cdf"``.

  Returns:
    ``[B, 1]`` quantiles in ``x_BxG``'s dtype.
  """
  dtype = x_BxG.dtype
  count = jnp.sum(mask_BxG, axis=-1, keepdims=True, dtype=jnp.int32)
  # Padding with the group max keeps the n valid values first after a sort
  # and avoids infinities (inf - inf would be NaN in the interpolation).
  top = jnp.max(jnp.where(mask_BxG, x_BxG, -jnp.inf), axis=-1, keepdims=True)
  top = jnp.where(count > 0, top, 0)
  srt = jnp.sort(jnp.where(mask_BxG, x_BxG, top), axis=-1)
  last = jnp.maximum(count - 1, 0)
  k = jnp.asarray(k, dtype)
  nf = count.astype(dtype)
  if method == "linear":
    pos = k * jnp.maximum(nf - 1, 0)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, last)
    hi = jnp.minimum(lo + 1, last)
    frac = jnp.clip(pos - lo.astype(dtype), 0, 1)
    x_lo = jnp.take_along_axis(srt, lo, axis=-1)
    x_hi = jnp.take_along_axis(srt, hi, axis=-1)
    q = x_lo + frac * (x_hi - x_lo)
  else:
    kn = k * nf
    tol = 16 * jnp.finfo(dtype).eps * jnp.maximum(kn, 1)
    rank = jnp.ceil(kn - tol).astype(jnp.int32)  # 1-based order statistic
    idx = jnp.clip(rank - 1, 0, last)
    q = jnp.take_along_axis(srt, idx, axis=-1)
  return jnp.where(count > 0, q, 0)


@register("qae", min_group_size=2)
def qae(*, k: float = 0.4, method: str = "linear", norm_by_std: bool = True,
        std: str = "unbiased", eps: float = 1e-6, eps_placement: str = "std",
        std_floor: float = 0.0, singleton: str = "zero",
        ) -> AdvantageTransform:
  """QAE: ``A_i = (r_i - q_K(group)) / (std_g + eps)``, a quantile baseline.

  See Wu et al., "Quantile Advantage Estimation for Entropy-Safe Reasoning"
  (arXiv 2509.22611). The group mean of GRPO is replaced by the group's
  K-quantile of the rewards; the scale is the usual group std. For binary
  rewards with success rate p this is a gate: with ``p <= 1 - K`` only
  successes get a (positive) signal, otherwise only failures get a
  (negative) one.

  Quantile convention: the paper defines ``b = inf{x : F(x) >= K}`` (the
  ``ceil(K n)``-th smallest reward, ``method="inverted_cdf"``); the
  authors' released code calls ``torch.quantile``, which interpolates
  linearly at position ``K (n - 1)`` (``method="linear"``, the default
  here, since it produced the published results). They agree when
  ``K (n - 1)`` is an integer (G = 16, K = 0.4) and differ otherwise: G = 8,
  K = 0.4 with 3 failures gives b = 0.8 (linear) and b = 1 (paper).
  The code uses the mean instead when K is outside (0, 1); here such a K
  raises (use ``grpo`` for the mean). n is the number of valid samples.

  Args:
    k: the quantile level K in (0, 1) (paper: 0.4). May be traced.
    method: ``"linear"`` (authors' code, ``torch.quantile``) or
      ``"inverted_cdf"`` (the paper's definition).
    norm_by_std: divide by the group std (verl ``norm_adv_by_std_in_grpo``).
    std: ``"unbiased"`` (n - 1, verl) or ``"population"`` (n).
    eps: added to the std (verl: 1e-6), or to the variance (see
      ``eps_placement``). An all-equal group gives ``0 / eps = 0``.
    eps_placement: ``"std"``: ``/(std + eps)``; ``"var"``: ``/sqrt(var +
      eps)``.
    std_floor: the std is floored here before ``eps`` is applied.
    singleton: a group with one valid sample gives ``"zero"`` or, as the
      verl-based code, its ``"raw"`` reward (baseline 0, std 1:
      ``r / (1 + eps)``).

  Returns:
    A stateless ``AdvantageTransform``; ``update(rewards_BxG, state, *,
    mask_BxG=None)`` returns ``[B, G]`` advantages. Needs no ctx.
  """
  _checks.check_choice("method", method, QUANTILE_METHODS, what="qae")
  _stats.check_conventions("qae", std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton,
                           std_floor=std_floor)
  if _checks.is_concrete(k) and not 0 < float(k) < 1:
    raise ValueError(f"qae: k must be in (0, 1), got {k!r}; the authors' "
                     "code falls back to the group mean outside (0, 1), "
                     "which is grpo.")

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    del ctx
    r, mask, _ = prepare("qae", rewards_BxG, mask_BxG, min_group_size=2)
    st = _stats.group_stats(r, mask, std=std)
    base = masked_quantile(r, mask, k, method=method)
    sd = st.std
    if singleton == "raw":
      one = st.count == 1
      base = jnp.where(one, 0, base)
      sd = jnp.where(one, 1, sd)
    adv = r - base
    if norm_by_std:
      adv = _stats.divide_by_std(adv, sd, eps=eps,
                                 eps_placement=eps_placement,
                                 std_floor=std_floor)
    return _stats.finish(adv, mask, st, singleton, r.dtype)

  return stateless(update_fn)
