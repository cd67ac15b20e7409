"""CANON: compare each response with the other half of its group by a metric.

See Chen et al., "Conditional Advantage Estimation for Reinforcement
Learning in Large Reasoning Models" (arXiv 2509.23962); the project's
estimator reference, §2.3.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import optional
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import safe_increment
from jaxrl_group.advantages._registry import register

CANON_METRICS = {"entropy": "entropy_BxG", "length": "lengths_BxG"}
CANON_SCHEDULES = ("constant", "accuracy", "cosine_restart")
ALPHA_SIDES = ("baseline", "reward")
COSINE_WEIGHTS = ("intra", "inter")


class CanonState(NamedTuple):
  """State of ``canon``: the training step the next update is evaluated at."""

  step: jax.Array  # shape=(), dtype=jnp.int32; step of the next update


def cosine_restart(step, *, total_steps=150, warmup_steps=30, cycles=3,
                   high=0.6, low=0.0, dtype=jnp.float32) -> jax.Array:
  """Linear warm-up, then cosine annealing with restarts (CANON's release).

  For ``step < warmup_steps``: ``high (step + 1) / warmup_steps``. After it,
  with ``L = (total_steps - warmup_steps) // cycles`` and ``e = (step -
  warmup_steps) mod L``: ``low + (high - low) (1 + cos(pi e / L)) / 2``.
  The cycles repeat past ``total_steps``. Everything may be traced.
  """
  step = jnp.asarray(step, jnp.int32)
  warm = jnp.asarray(warmup_steps, jnp.int32)
  length = jnp.maximum(
      (jnp.asarray(total_steps, jnp.int32) - warm)
      // jnp.maximum(jnp.asarray(cycles, jnp.int32), 1), 1)
  high = jnp.asarray(high, dtype)
  low = jnp.asarray(low, dtype)
  ramp = high * (step + 1).astype(dtype) / jnp.maximum(warm, 1).astype(dtype)
  e = jnp.mod(step - warm, length).astype(dtype)
  wave = low + 0.5 * (high - low) * (1 + jnp.cos(jnp.pi * e
                                                 / length.astype(dtype)))
  return jnp.where(step < warm, ramp, wave)


def split_halves(metric_BxG: jax.Array, mask_BxG: jax.Array) -> jax.Array:
  """True for the high-metric half of each group's valid samples.

  The valid samples are sorted by the metric in ascending order, ties kept
  in index order (a stable sort); the first ``floor(n / 2)`` form the low
  half, the rest (the extra one for odd n) the high half.
  """
  g = metric_BxG.shape[-1]
  idx = jnp.arange(g)
  x_i = metric_BxG[..., :, None]
  x_j = metric_BxG[..., None, :]
  earlier = (idx[None, :] < idx[:, None]).reshape(
      (1,) * (metric_BxG.ndim - 1) + (g, g))
  before = (x_j < x_i) | ((x_j == x_i) & earlier)
  rank = jnp.sum(before & mask_BxG[..., None, :], axis=-1)
  n = jnp.sum(mask_BxG, axis=-1, keepdims=True)
  return rank >= n // 2


@register("canon", min_group_size=2, requires=("entropy_BxG",),
          stateful=True)
def canon(*, metric: str = "entropy", mu: float = 1.0, alpha: float = 1.0,
          beta: float = 0.0, norm_constant: float = 1.0,
          alpha_side: str | None = None, schedule: str = "constant",
          accuracy_clip: bool = True, cosine_weight: str = "intra",
          cosine_high: float = 0.6, cosine_low: float = 0.0,
          warmup_steps: int = 30, total_steps: int = 150, cycles: int = 3,
          first_step: int = 1, singleton: str = "zero",
          ) -> AdvantageTransform:
  """CANON: inter-half and intra-half baselines after a split by a metric.

  See Chen et al., "Conditional Advantage Estimation for Reinforcement
  Learning in Large Reasoning Models" (arXiv 2509.23962). Each group's
  valid samples are split by a metric (mean token entropy, or length) into
  a low half and a high half (:func:`split_halves`); ``m_lo`` and ``m_hi``
  are the halves' mean rewards. With the release's formulas, for a
  high-metric sample

    ``A = [mu (R - alpha m_lo + beta) + (1 - mu) (R - m_hi)] / C``

  and for a low-metric one

    ``A = [mu (alpha R - m_hi - beta) + (1 - mu) (R - m_lo)] / C``

  (``alpha_side="baseline"``, the entropy version). The length version
  moves alpha to the other side (``"reward"``): high ``alpha R - m_lo +
  beta``, low ``R - alpha m_hi - beta``, the paper's convention with the
  long half as G+ (alpha = 0.9 compresses length). The inter-half term
  (weight mu) learns which direction of the metric pays; the intra-half
  term compares with the own half. mu = 0.5 with an even group is
  Dr.GRPO. No std normalisation. The paper text is known here only from
  summaries [summary]; the formulas follow the authors' code.

  Schedules for mu (``schedule``): ``"constant"`` uses ``mu``;
  ``"accuracy"`` (the release's ``_annel``, "first intra, later inter")
  sets mu to the mean reward over the batch's valid samples;
  ``"cosine_restart"`` evaluates :func:`cosine_restart` at the step, giving
  the intra weight (``cosine_weight="intra"``, release ``_cosine_restart``:
  mu = 1 - c, with high 0.6 and low 0) or the inter weight (``"inter"``,
  release ``_cosine_restart_r``: mu = c, with ``cosine_high=1`` and
  ``cosine_low=0.4``). The step is ``state.step``, which starts at
  ``first_step`` (verl's ``global_steps`` starts at 1) and advances by one
  per update; a ``step`` in ctx overrides it and the state continues from
  there. (The release passes the step only from its DAPO trainer; its
  plain trainer leaves it at 0, freezing the schedule.)

  Args:
    metric: ``"entropy"`` (ctx ``entropy_BxG``, the masked mean token
      entropy under the old policy) or ``"length"`` (ctx ``lengths_BxG``).
    mu: the inter-half weight for ``schedule="constant"`` (release
      ``_lambda`` = 1, pure inter), in [0, 1]. May be traced.
    alpha: the metric-direction factor (release: 1.0). May be traced.
    beta: an additive bias of the inter term (release: 0). May be traced.
    norm_constant: C, a constant divisor (release:
      ``max_response_length`` with loss ``seq-mean-token-sum``, else 1).
    alpha_side: ``"baseline"`` or ``"reward"`` (see above); None picks the
      release's choice for ``metric`` (entropy: baseline, length: reward).
    schedule: ``"constant"``, ``"accuracy"`` or ``"cosine_restart"``.
    accuracy_clip: clip the ``"accuracy"`` mu to [0, 1] (the release does
      not; rewards in [0, 1] never need it).
    cosine_weight: ``"intra"`` or ``"inter"``: which weight the cosine
      value is.
    cosine_high: the cosine schedule's peak (release: 0.6; ``_r``: 1).
    cosine_low: its minimum (release: 0; ``_r``: 0.4).
    warmup_steps: linear warm-up steps of the cosine schedule (30).
    total_steps: its total steps (150), split into ``cycles`` restarts.
    cycles: number of cosine cycles after the warm-up (3).
    first_step: the initial ``state.step`` (1, as verl).
    singleton: a group with one valid sample gives ``"zero"`` or, as the
      release (both half means forced to 0), ``"raw"``: ``[R + mu beta] / C``
      for ``alpha_side="baseline"``.

  Returns:
    A stateful ``AdvantageTransform`` with ``CanonState``;
    ``update(rewards_BxG, state, *, mask_BxG=None, entropy_BxG, step=None)``
    returns ``[B, G]`` advantages. Needs ctx ``entropy_BxG`` (or
    ``lengths_BxG`` with ``metric="length"``); reads the optional ``step``.
  """
  _checks.check_choice("metric", metric, tuple(CANON_METRICS), what="canon")
  _checks.check_choice("schedule", schedule, CANON_SCHEDULES, what="canon")
  _checks.check_choice("cosine_weight", cosine_weight, COSINE_WEIGHTS,
                       what="canon")
  if alpha_side is None:
    alpha_side = "baseline" if metric == "entropy" else "reward"
  _checks.check_choice("alpha_side", alpha_side, ALPHA_SIDES, what="canon")
  _stats.check_conventions("canon", singleton=singleton)
  if _checks.is_concrete(mu) and not 0 <= float(mu) <= 1:
    raise ValueError(f"canon: mu must be in [0, 1], got {mu!r}.")
  if _checks.is_concrete(norm_constant) and not float(norm_constant) > 0:
    raise ValueError(
        f"canon: norm_constant must be > 0, got {norm_constant!r}.")
  for name, value in (("warmup_steps", warmup_steps),
                      ("total_steps", total_steps)):
    _checks.check_nonnegative(name, value, what="canon")
  if _checks.is_concrete(cycles) and not int(cycles) >= 1:
    raise ValueError(f"canon: cycles must be >= 1, got {cycles!r}.")
  key = CANON_METRICS[metric]

  def init_fn(rewards_BxG):
    del rewards_BxG
    return CanonState(step=jnp.asarray(first_step, jnp.int32))

  def weight(r, mask, step):
    dtype = r.dtype
    if schedule == "constant":
      return jnp.asarray(mu, dtype)
    if schedule == "accuracy":
      acc = _stats.masked_mean(r, mask)
      return jnp.clip(acc, 0, 1) if accuracy_clip else acc
    c = cosine_restart(step, total_steps=total_steps,
                       warmup_steps=warmup_steps, cycles=cycles,
                       high=cosine_high, low=cosine_low, dtype=dtype)
    return 1 - c if cosine_weight == "intra" else c

  def update_fn(rewards_BxG, state, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare("canon", rewards_BxG, mask_BxG,
                             min_group_size=2)
    x = require("canon", ctx, key, sizes)
    _checks.check_floating(key, x, what="canon")
    step = optional("canon", ctx, "step", sizes)
    step = state.step if step is None else jnp.asarray(step, jnp.int32)
    dtype = r.dtype
    high = split_halves(x, mask)
    m_hi = _stats.masked_mean(r, mask & high, axis=-1, keepdims=True)
    m_lo = _stats.masked_mean(r, mask & ~high, axis=-1, keepdims=True)
    n = jnp.sum(mask, axis=-1, keepdims=True)
    if singleton == "raw":
      m_hi = jnp.where(n == 1, 0, m_hi)
      m_lo = jnp.where(n == 1, 0, m_lo)
    a = jnp.asarray(alpha, dtype)
    b = jnp.asarray(beta, dtype)
    if alpha_side == "baseline":
      inter_hi = r - a * m_lo + b
      inter_lo = a * r - m_hi - b
    else:
      inter_hi = a * r - m_lo + b
      inter_lo = r - a * m_hi - b
    w = weight(r, mask, step)
    adv = jnp.where(high, w * inter_hi + (1 - w) * (r - m_hi),
                    w * inter_lo + (1 - w) * (r - m_lo))
    adv = adv / jnp.asarray(norm_constant, dtype)
    keep = mask & (n > 1) if singleton == "zero" else mask
    out = _stats.finish(adv, keep, dtype=dtype)
    return out, CanonState(step=safe_increment(step))

  return AdvantageTransform(init_fn, update_fn)
