"""V0.5 baseline: shrink the rollout mean toward a value-model prior.

See Zhang et al., V0.5 (arXiv 2603.10848); the project's estimator
reference, §2.16.
"""

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

VARIANCES = ("bernoulli", "empirical")


def _prior_terms(r, mask, prior_B, *, variance, std):
  """Group stats, prior [B, 1], sampling variance of the mean s^2/n, n."""
  st = _stats.group_stats(r, mask, std=std)
  v = prior_B[:, None].astype(r.dtype)
  if variance == "bernoulli":
    p = jnp.clip(v, 0, 1)
    s2 = p * (1 - p)
  else:
    s2 = jnp.square(st.std)
  var_mean = s2 / jnp.maximum(st.count, 1)
  return st, v, var_mean


def v05_deviation_test(rewards_BxG: jax.typing.ArrayLike,
                       value_prior_B: jax.typing.ArrayLike, *,
                       mask_BxG: jax.typing.ArrayLike | None = None,
                       z_alpha=1.96, variance: str = "bernoulli",
                       std: str = "unbiased") -> jax.Array:
  """V0.5's deviation test: does the prior disagree with the rollouts?

  See Zhang et al., V0.5 (arXiv 2603.10848) [reading]: reject the prior of
  a group when ``|mean_g - v| > z_alpha sqrt(s^2 / n)``, with ``s^2 = v (1 -
  v)`` (``"bernoulli"``) or the group's sample variance (``"empirical"``).
  The host loop then samples more for the rejected prompts (``n <- 2n`` up
  to a cap) and recomputes. An empty group is never rejected.

  Args:
    rewards_BxG: rewards.
    value_prior_B: the prior's predicted mean reward per prompt.
    mask_BxG: bool, valid samples (default all).
    z_alpha: the critical value (1.96: two-sided 5%).
    variance: ``"bernoulli"`` or ``"empirical"``.
    std: the std type of ``"empirical"``.

  Returns:
    bool ``[B]``, True where the prior is rejected.
  """
  what = "v05_deviation_test"
  _checks.check_choice("variance", variance, VARIANCES, what=what)
  _stats.check_conventions(what, std=std)
  r, mask, sizes = prepare(what, rewards_BxG, mask_BxG)
  prior = jnp.asarray(value_prior_B)
  _checks.check_named("value_prior_B", prior, sizes, what=what)
  st, v, var_mean = _prior_terms(r, mask, prior, variance=variance, std=std)
  reject = jnp.abs(st.mean - v) > z_alpha * jnp.sqrt(var_mean)
  return (reject & (st.count > 0))[:, 0]


@register("v05_baseline", requires=("value_prior_B",))
def v05_baseline(*, variance: str = "bernoulli", z_alpha: float | None = None,
                 norm_by_std: bool = False, std: str = "unbiased",
                 eps: float = 1e-6, eps_placement: str = "std",
                 ) -> AdvantageTransform:
  """V0.5: ``A_i = r_i - b``, ``b`` a shrinkage of the mean toward a prior.

  See Zhang et al., V0.5, a generalist value model as a prior for sparse
  rollouts (arXiv 2603.10848). No public code; this is the reference's
  [reading]: with the group's valid-sample mean ``m`` over ``n`` rollouts
  and the prior ``v`` = ``value_prior_B`` from ctx (a frozen value model's
  predicted success rate),
  ``b = lam v + (1 - lam) m``,
  ``lam = (s^2/n) / (s^2/n + (v - m)^2)`` and ``s^2 = v (1 - v)``
  (Bernoulli; ``v`` clipped to [0, 1] inside ``s^2``). This ``lam``
  minimises the baseline's estimated MSE. Where it is 0/0 (``s^2 = 0`` and
  ``v = m``, e.g. ``v`` in {0, 1} agreeing with every rollout) both
  estimates agree and ``lam = 1`` is used (derived guard; ``b = v = m``).

  The paper's deviation test draws extra rollouts when the prior is
  rejected; that loop runs on the host (``v05_deviation_test``). Inside the
  transform, ``z_alpha`` optionally applies the test's outcome: a rejected
  group uses the rollout mean alone (``lam = 0``).

  One valid rollout is the sparse regime the method targets, so a singleton
  group is not zeroed: its baseline is the shrinkage of its one reward
  toward the prior.

  Args:
    variance: ``"bernoulli"`` (``s^2 = v (1 - v)``, the reading for 0/1
      rewards) or ``"empirical"`` (the group's sample variance, for graded
      rewards; a singleton then gives ``lam = 0`` and ``A = 0``).
    z_alpha: ``None`` (default): shrinkage only. A number: groups that fail
      the deviation test ``|m - v| > z_alpha sqrt(s^2/n)`` get ``lam = 0``.
    norm_by_std: also divide by the group std (with ``eps``) where the group
      has two or more valid samples; a singleton is divided by 1 (+ eps).
    std: ``"unbiased"`` or ``"population"`` (empirical variance, std).
    eps: added to the std or variance (with ``norm_by_std``).
    eps_placement: ``"std"`` or ``"var"`` (with ``norm_by_std``).

  Returns:
    A stateless ``AdvantageTransform``; needs ``value_prior_B`` in ctx;
    ``update(rewards_BxG, ...)`` returns ``[B, G]`` advantages.
  """
  what = "v05_baseline"
  _checks.check_choice("variance", variance, VARIANCES, what=what)
  _stats.check_conventions(what, std=std, eps=eps,
                           eps_placement=eps_placement)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(what, rewards_BxG, mask_BxG)
    prior = require(what, ctx, "value_prior_B", sizes)
    _checks.check_floating("value_prior_B", prior, what=what)
    st, v, var_mean = _prior_terms(r, mask, prior, variance=variance,
                                   std=std)
    gap = v - st.mean
    den = var_mean + jnp.square(gap)
    lam = jnp.where(den > 0, var_mean / jnp.where(den > 0, den, 1), 1)
    if z_alpha is not None:
      reject = jnp.abs(gap) > z_alpha * jnp.sqrt(var_mean)
      lam = jnp.where(reject, 0, lam)
    # r - b = (r - m) - lam (v - m), centred first for float32.
    adv = st.centered - lam * gap
    if norm_by_std:
      sd = jnp.where(st.count > 1, st.std, 1)
      adv = _stats.divide_by_std(adv, sd, eps=eps,
                                 eps_placement=eps_placement)
    return _stats.finish(adv, mask, dtype=r.dtype)

  return stateless(update_fn)
