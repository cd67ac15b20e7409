"""Rollout/training mismatch correction: IS weights, rejection, OPSM.

The inference engine samples with ``sampling_logp`` (pi_rollout); the trainer
recomputes ``old_logp`` (pi_old) for the same tokens. They differ (kernels,
precision, stale weights), so the PPO ratio ``pi_theta / pi_old`` is taken
under the wrong measure. The tools here correct or filter that:

* :func:`importance_weights`: ``pi_old / pi_rollout`` per token or per
  sequence, truncated (TIS) or masked (MIS / IcePop). The caller multiplies
  the weights into the per-token loss before aggregation.
* :func:`rejection_mask`: verl ``rollout_rs`` modes, a hard trust region that
  drops tokens or sequences from the loss mask.
* :func:`opsm_mask`: off-policy sequence masking (TRL
  ``off_policy_mask_threshold``, DeepSeek-V3.2).

Everything returned here is gradient-free (stop-gradient or bool).
"""

from typing import Any

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.losses import _common
from jaxrl_group.losses._aggregation import Deferred
from jaxrl_group.losses._aggregation import token_mean

IS_LEVELS = ("token", "sequence")
IS_MODES = ("truncate", "mask")
REJECTION_MODES = ("token_k1", "token_k2", "token_k3",
                   "seq_sum_k1", "seq_sum_k2", "seq_sum_k3",
                   "seq_mean_k1", "seq_mean_k2", "seq_mean_k3",
                   "seq_max_k2", "seq_max_k3")

# verl's SAFETY_BOUND: log-ratios are clamped here before exp in k3.
_LOG_BOUND = 20.0


def _positive(name: str, value: Any, what: str) -> None:
  if _checks.is_concrete(value) and not float(value) > 0:
    raise ValueError(f"{what}: {name} must be > 0, got {value!r}.")


def _log_ratio(old_logp_BxGxT, sampling_logp_BxGxT, mask_BxGxT):
  """``log(pi_old / pi_rollout)`` per token, 0 at masked tokens, no grad."""
  delta = jnp.where(mask_BxGxT, old_logp_BxGxT - sampling_logp_BxGxT, 0)
  return jax.lax.stop_gradient(delta)


def importance_weights(
    old_logp_BxGxT: jax.typing.ArrayLike,
    sampling_logp_BxGxT: jax.typing.ArrayLike,
    mask_BxGxT: jax.typing.ArrayLike,
    *,
    level: str = "token",
    mode: str = "truncate",
    clip_max: float | jax.Array = 2.0,
    clip_min: float | jax.Array | None = None,
    batch_normalize: bool = False,
) -> tuple[jax.Array, dict[str, Deferred]]:
  """Importance weights ``pi_old / pi_rollout`` for the training mismatch.

  The log-ratio ``delta_t = old_logp_t - sampling_logp_t`` gives the ratio
  ``exp(delta_t)`` per token (``level="token"``) or ``exp(sum_t delta_t)``
  per sequence, copied to its tokens (``level="sequence"``). Then

  * ``mode="truncate"`` (truncated IS, TIS): ``clip(ratio, clip_min,
    clip_max)``; with ``clip_min=None`` only the upper bound applies.
  * ``mode="mask"`` (masked IS, MIS; verl's "IcePop" two-sided threshold):
    the ratio where ``clip_min <= ratio <= clip_max``, else 0.

  Everything is computed in log space, so long sequences cannot overflow
  (verl clamps the log-ratio to +-20 before ``exp`` instead; the results
  agree whenever the ratio is inside that range or truncated).

  Peers: TRL ``vllm_importance_sampling_mode`` = ``{token,sequence}_{truncate,
  mask}`` with ``vllm_importance_sampling_clip_max=3.0`` and ``clip_min=None``
  (its config default mode is ``sequence_mask``); verl
  ``algorithm.rollout_correction`` ``rollout_is=token|sequence`` with
  ``rollout_is_threshold=2.0`` (truncate, upper bound only; a
  ``"lower_upper"`` threshold gives the two-sided mask). The defaults here
  are verl's: token level, truncate, ``clip_max=2.0``; pass
  ``clip_max=3.0`` for TRL's threshold.

  Multiply the weights into the per-token loss (after the PPO clip) and then
  aggregate: ``loss_BxGxT * weights_BxGxT``.

  Args:
    old_logp_BxGxT: log-probs of the sampled tokens under the trainer's
      behaviour policy (pi_old; in verl's bypass mode the current policy).
    sampling_logp_BxGxT: the inference engine's log-probs (pi_rollout).
    mask_BxGxT: bool, valid tokens.
    level: ``"token"`` or ``"sequence"`` (summed log-ratio).
    mode: ``"truncate"`` or ``"mask"``.
    clip_max: upper bound C_max on the ratio (> 0; may be traced).
    clip_min: lower bound C_min, or None for none (>= 0; may be traced).
    batch_normalize: verl ``rollout_is_batch_normalize``: divide the weights
      by their batch mean (over valid tokens for ``level="token"``, over
      sequences with a valid token for ``"sequence"``), unless that mean is
      <= 1e-8. Applied after truncation / masking, so normalised weights may
      exceed ``clip_max``. The mean is over the arrays passed: call it on
      the whole batch, not per micro-batch.

  Returns:
    ``(weights_BxGxT, metrics)``: weights under stop-gradient, 0 at masked
    tokens; metrics (token means, ``Deferred``): ``is_weight_mean``,
    ``is_frac_high`` (raw ratio > clip_max), ``is_frac_low`` (raw ratio <
    clip_min), ``mismatch_kl`` (k1 of KL(pi_rollout || pi_old), verl's
    ``rollout_corr/kl``) and ``mismatch_k3``. At sequence level the fractions
    are token-weighted.
  """
  what = "importance_weights"
  _common.check_tokens(what, mask_BxGxT, old_logp_BxGxT=old_logp_BxGxT,
                       sampling_logp_BxGxT=sampling_logp_BxGxT)
  _checks.check_choice("level", level, IS_LEVELS, what=what)
  _checks.check_choice("mode", mode, IS_MODES, what=what)
  _positive("clip_max", clip_max, what)
  if clip_min is not None:
    _checks.check_nonnegative("clip_min", clip_min, what=what)
    if (_checks.is_concrete(clip_min) and _checks.is_concrete(clip_max)
        and not float(clip_min) < float(clip_max)):
      raise ValueError(f"{what}: clip_min must be < clip_max, got "
                       f"{clip_min!r} >= {clip_max!r}.")
  mask = jnp.asarray(mask_BxGxT)
  delta = _log_ratio(jnp.asarray(old_logp_BxGxT),
                     jnp.asarray(sampling_logp_BxGxT), mask)
  dtype = delta.dtype
  if level == "token":
    log_w = delta
  else:
    log_w = jnp.broadcast_to(jnp.sum(delta, axis=-1, keepdims=True),
                             delta.shape)
  log_hi = jnp.log(jnp.asarray(clip_max, dtype))
  high = log_w > log_hi
  if clip_min is None:
    low = jnp.zeros_like(mask)
    log_lo = None
  else:
    log_lo = jnp.log(jnp.asarray(clip_min, dtype))  # -inf for clip_min = 0
    low = log_w < log_lo
  if mode == "truncate":
    clipped = jnp.minimum(log_w, log_hi)
    if log_lo is not None:
      clipped = jnp.maximum(clipped, log_lo)
    weights = jnp.exp(clipped)
  else:
    keep = ~high & ~low
    weights = jnp.where(keep, jnp.exp(jnp.minimum(log_w, log_hi)), 0)
  weights = jnp.where(mask, weights, 0)
  if batch_normalize:
    m = mask.astype(dtype)
    if level == "token":
      mean = jnp.sum(weights) / jnp.maximum(jnp.sum(m), 1)
    else:
      tokens = jnp.sum(m, axis=-1)
      per_seq = jnp.sum(weights, axis=-1) / jnp.maximum(tokens, 1)
      n_seq = jnp.sum(tokens > 0)
      mean = jnp.sum(per_seq) / jnp.maximum(n_seq, 1)
    weights = weights / jnp.where(mean > 1e-8, mean, 1)
  weights = jax.lax.stop_gradient(weights)
  bounded = jnp.clip(delta, -_LOG_BOUND, _LOG_BOUND)
  metrics = {
      "is_weight_mean": token_mean(weights, mask),
      "is_frac_high": token_mean(high.astype(dtype), mask),
      "is_frac_low": token_mean(low.astype(dtype), mask),
      "mismatch_kl": token_mean(-delta, mask),
      "mismatch_k3": token_mean(jnp.exp(bounded) - 1 - bounded, mask),
  }
  return weights, metrics


def rejection_mask(
    old_logp_BxGxT: jax.typing.ArrayLike,
    sampling_logp_BxGxT: jax.typing.ArrayLike,
    mask_BxGxT: jax.typing.ArrayLike,
    *,
    mode: str,
    threshold: float | jax.Array,
    threshold_low: float | jax.Array | None = None,
) -> jax.Array:
  """Rejection sampling of tokens or sequences (verl ``rollout_rs``).

  This is a [reading]: the project's loss reference only says that the mode
  names denote a KL-type estimator between the training and rollout
  policies, per token or aggregated per sequence by sum, mean or max, and
  compared with ``rollout_rs_threshold``. The reading implemented here
  follows verl's ``RolloutCorrectionConfig`` documentation. With the
  log-ratio ``x_t = old_logp_t - sampling_logp_t`` (``log r``, r =
  pi_old / pi_rollout):

  * ``k1`` modes are ratio bounds: ``token_k1`` keeps a token when
    ``threshold_low <= exp(x_t) <= threshold``; ``seq_sum_k1`` tests
    ``exp(sum_t x_t)`` (the sequence ratio) and ``seq_mean_k1`` tests
    ``exp(mean_t x_t)`` (the geometric-mean ratio, verl's "Geo-RS"), and
    keep or drop the whole sequence. ``threshold_low`` defaults to
    ``1 / threshold`` (verl's rule for a single float threshold; pass
    verl's ``"lower_upper"`` string as the two numbers).
  * ``k2`` (``x^2 / 2``) and ``k3`` (``exp(x) - 1 - x``, with x clamped to
    +-20) are divergences with an upper bound only: ``token_k*`` keeps a
    token when ``k_t <= threshold``; ``seq_sum_k*``, ``seq_mean_k*`` and
    ``seq_max_k*`` keep a sequence when the sum, mean or max of ``k_t``
    over its valid tokens is ``<= threshold``.

  verl accepts a comma-separated list of modes; here call once per mode
  and combine the masks with ``&``. Apply the result as the new loss mask
  (verl updates ``response_mask`` before the advantage step).

  Args:
    old_logp_BxGxT: trainer (pi_old) log-probs of the sampled tokens.
    sampling_logp_BxGxT: inference-engine (pi_rollout) log-probs.
    mask_BxGxT: bool, valid tokens.
    mode: one of ``REJECTION_MODES``. There is no default (verl's is off).
      verl presets: ``seq_mean_k3`` with 0.01 (K3-RS), ``seq_mean_k1`` with
      0.999 / 1.001 (Geo-RS), ``seq_sum_k1`` with 0.5 / 2.0 (Seq-MIS).
    threshold: upper bound (a ratio for k1, a divergence for k2 / k3); > 0,
      may be traced.
    threshold_low: lower ratio bound for k1 modes (default
      ``1 / threshold``); must be None for k2 / k3 modes.

  Returns:
    bool ``[B, G, T]``: ``mask_BxGxT`` with the rejected tokens removed.
  """
  what = "rejection_mask"
  _common.check_tokens(what, mask_BxGxT, old_logp_BxGxT=old_logp_BxGxT,
                       sampling_logp_BxGxT=sampling_logp_BxGxT)
  _checks.check_choice("mode", mode, REJECTION_MODES, what=what)
  _positive("threshold", threshold, what)
  level, estimator = mode.rsplit("_", 1)
  if estimator != "k1" and threshold_low is not None:
    raise ValueError(f"{what}: threshold_low applies to the k1 (ratio) "
                     f"modes only; mode {mode!r} has an upper bound only.")
  if threshold_low is not None:
    _positive("threshold_low", threshold_low, what)
  mask = jnp.asarray(mask_BxGxT)
  x = _log_ratio(jnp.asarray(old_logp_BxGxT),
                 jnp.asarray(sampling_logp_BxGxT), mask)
  dtype = x.dtype
  m = mask.astype(dtype)
  if estimator == "k1":
    value = x
  elif estimator == "k2":
    value = 0.5 * jnp.square(x)
  else:
    xb = jnp.clip(x, -_LOG_BOUND, _LOG_BOUND)
    value = jnp.exp(xb) - 1 - xb
  value = jnp.where(mask, value, 0)
  if level == "token":
    stat = value
  elif level == "seq_sum":
    stat = jnp.sum(value, axis=-1, keepdims=True)
  elif level == "seq_mean":
    stat = (jnp.sum(value, axis=-1, keepdims=True)
            / jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1))
  else:  # seq_max; k2 and k3 are >= 0, so masked zeros never win.
    stat = jnp.max(value, axis=-1, keepdims=True)
  upper = jnp.asarray(threshold, dtype)
  if estimator == "k1":
    lower = (1 / upper if threshold_low is None
             else jnp.asarray(threshold_low, dtype))
    keep = (stat >= jnp.log(lower)) & (stat <= jnp.log(upper))
  else:
    keep = stat <= upper
  return mask & jnp.broadcast_to(keep, mask.shape)


def opsm_mask(
    logp_BxGxT: jax.typing.ArrayLike,
    sampling_logp_BxGxT: jax.typing.ArrayLike,
    adv: jax.typing.ArrayLike,
    mask_BxGxT: jax.typing.ArrayLike,
    *,
    threshold: float | jax.Array,
) -> jax.Array:
  """Off-policy sequence masking (OPSM).

  Token t of sequence i stays in the loss if ``A_{i,t} >= 0`` or
  ``mean_t(sampling_logp - logp) <= threshold`` over the sequence's valid
  tokens: negative-advantage sequences that drifted too far from the policy
  that sampled them are masked out. See the DeepSeek-V3.2 technical report
  (DeepSeek-AI) and TRL ``off_policy_mask_threshold`` (default None: off).
  TRL compares the current log-probs with the engine's sampling log-probs;
  DeepSeek-V3.2 writes ``log(pi_old / pi_theta)``: pass ``old_logp`` as
  ``sampling_logp_BxGxT`` for that form.

  Args:
    logp_BxGxT: current-policy log-probs (no gradient flows through here).
    sampling_logp_BxGxT: the sampling policy's log-probs.
    adv: advantages ``[B, G]`` (TRL: one per sequence) or ``[B, G, T]``
      (DeepSeek-V3.2's per-token sign test).
    mask_BxGxT: bool, valid tokens.
    threshold: delta, the largest mean log-ratio kept for A < 0 (may be
      traced). No default: the peers leave OPSM off.

  Returns:
    bool ``[B, G, T]``: the kept tokens (a subset of ``mask_BxGxT``).
  """
  what = "opsm_mask"
  adv_name = _adv_name(adv, what)
  _common.check_tokens(what, mask_BxGxT, logp_BxGxT=logp_BxGxT,
                       sampling_logp_BxGxT=sampling_logp_BxGxT,
                       **{adv_name: adv})
  mask = jnp.asarray(mask_BxGxT)
  diff = jax.lax.stop_gradient(jnp.where(
      mask, jnp.asarray(sampling_logp_BxGxT) - jnp.asarray(logp_BxGxT), 0))
  drift = _common.seq_mean(diff, mask)  # [B, G]
  close = drift <= jnp.asarray(threshold, diff.dtype)
  a = _common.token_adv(jax.lax.stop_gradient(jnp.asarray(adv)), mask)
  return mask & ((a >= 0) | close[..., None])


def _adv_name(adv: Any, what: str) -> str:
  ndim = jnp.ndim(adv)
  if ndim == 2:
    return "adv_BxG"
  if ndim == 3:
    return "adv_BxGxT"
  raise ValueError(f"{what}: adv must have shape [B, G] or [B, G, T], got "
                   f"shape {jnp.shape(adv)}.")
