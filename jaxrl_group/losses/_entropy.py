"""Token entropy and the entropy terms of the loss.

* :func:`entropy_from_logits` / :func:`entropy_from_logits_chunked`: the
  entropy of ``softmax(logits / tau)`` per position (verl
  ``entropy_from_logits`` and ``entropy_from_logits_with_chunking``).
* :func:`entropy_bonus`: ``-coef`` times the entropy aggregated like the loss
  (verl ``actor.entropy_coeff``, TRL ``entropy_coef``).
* :func:`targeted_entropy`: ``coef * |H - target|`` (Confucius3-Math TER).
* :func:`top_entropy_mask`: keep the top-ρ share of tokens by entropy (TRL
  ``top_entropy_quantile``).
* :func:`adaptive_entropy_coef`: the coefficient controller of Skywork-OR1 as
  in TRL ``use_adaptive_entropy``.

See the loss reference §5.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.losses import _aggregation
from jaxrl_group.losses import _common
from jaxrl_group.losses import _logprobs

Deferred = _aggregation.Deferred


def _entropy_rows(logits: jax.Array, unused_aux: jax.Array | None,
                  t: jax.Array) -> jax.Array:
  """Entropy of ``softmax(logits / t)`` over the last axis, compute dtype.

  ``H = logsumexp(z) - sum_v p_v z_v = log s - sum_v e_v d_v / s`` with
  ``d = z - max z``, ``e = exp(d)``, ``s = sum e``. Entries with ``e = 0``
  (``-inf`` logits) contribute 0 and no NaN to the value or the gradient.
  """
  del unused_aux
  dtype = t.dtype
  m = _logprobs.row_max(logits, dtype)
  d = (logits.astype(dtype) - m) / t
  e = jnp.exp(d)
  s = jnp.sum(e, axis=-1)
  d_safe = jnp.where(e > 0, d, 0)
  return jnp.log(s) - jnp.sum(e * d_safe, axis=-1) / s


@jax.jit
def _entropy_whole(logits, t):
  return _entropy_rows(logits, None, t)


def _entropy_rows_grad(logits, unused_aux, t, g):
  """Cotangents of :func:`_entropy_rows`.

  dH / dz_v = -p_v (z_v - E_p z), and dH / dt = Var_p(z) / t.
  """
  del unused_aux
  dtype = t.dtype
  m = _logprobs.row_max(logits, dtype)
  d = (logits.astype(dtype) - m) / t
  e = jnp.exp(d)
  p = e / jnp.sum(e, axis=-1, keepdims=True)
  d_safe = jnp.where(p > 0, d, 0)
  centred = d_safe - jnp.sum(p * d_safe, axis=-1, keepdims=True)
  dlogits = -g[..., None] * p * centred / t
  dt = g * jnp.sum(p * centred * centred, axis=-1) / t
  return dlogits, dt


_chunked_entropy = _logprobs.chunked_over_t(_entropy_rows, _entropy_rows_grad)


def entropy_from_logits(logits_BxTxV: jax.typing.ArrayLike, *,
                        temperature: float | jax.Array = 1.0) -> jax.Array:
  """Entropy of ``softmax(logits / tau)`` at every position.

  ``H = logsumexp(z) - sum softmax(z) * z`` (verl ``entropy_from_logits``),
  computed in float32 (at least) from the shifted logits; ``-inf`` logits
  (banned tokens) contribute 0. The two reductions share ``exp(z - max z)``,
  so XLA may hold ``[B, T, V]`` float32 temporaries in the forward and the
  backward pass (it does on CPU); :func:`entropy_from_logits_chunked` bounds
  them to one chunk. Differentiable in any mode (plain autodiff).

  Args:
    logits_BxTxV: ``[..., T, V]`` floating logits (e.g. ``[B, G, T, V]``).
    temperature: tau > 0 (verl divides the logits by it before the entropy);
      may be traced.

  Returns:
    ``[..., T]`` entropies in nats, float32 (float64 for float64 logits).
  """
  what = "entropy_from_logits"
  _logprobs.check_logits(what, logits_BxTxV)
  _logprobs.check_temperature(what, temperature)
  logits = jnp.asarray(logits_BxTxV)
  t = jnp.asarray(temperature, _logprobs.compute_dtype(logits.dtype))
  return _entropy_whole(logits, t)


def entropy_from_logits_chunked(logits_BxTxV: jax.typing.ArrayLike, *,
                                chunk_size: int,
                                temperature: float | jax.Array = 1.0
                                ) -> jax.Array:
  """:func:`entropy_from_logits` computed ``chunk_size`` positions at a time.

  verl ``entropy_from_logits_with_chunking`` with ``entropy_checkpointing``:
  the softmax of only one ``[..., chunk_size, V]`` chunk exists at a time, in
  the forward and in the backward pass (a custom VJP recomputes it; the
  logits gradient is written chunk by chunk into one buffer). Chunks span all
  leading positions (a batch sharded over devices stays evenly split); when
  ``chunk_size`` does not divide T the last chunk is shifted to end at T and
  overlaps the previous one. Same values and first derivatives (wrt the
  logits and the temperature) as the whole version; reverse mode only
  (``jax.jvp`` and ``jax.hessian`` raise: it is a custom VJP).

  Args:
    logits_BxTxV: ``[..., T, V]`` floating logits.
    chunk_size: positions of T per chunk, a static Python int >= 1.
    temperature: tau > 0; may be traced.

  Returns:
    ``[..., T]`` entropies, float32 (float64 for float64 logits).
  """
  what = "entropy_from_logits_chunked"
  _logprobs.check_logits(what, logits_BxTxV)
  _logprobs.check_temperature(what, temperature)
  _logprobs.check_chunk_size(what, chunk_size)
  logits = jnp.asarray(logits_BxTxV)
  t = jnp.asarray(temperature, _logprobs.compute_dtype(logits.dtype))
  length = logits.shape[-2]
  if length == 0:
    return _entropy_whole(logits, t)
  flat = _logprobs.flatten_lead(logits, 2)
  aux = jnp.zeros(flat.shape[:2], jnp.int32)  # unused; shares the chunker
  out = _chunked_entropy(flat, aux, t, min(int(chunk_size), length))
  return out.reshape(logits.shape[:-1])


def entropy_bonus(entropy_BxGxT: jax.typing.ArrayLike,
                  mask_BxGxT: jax.typing.ArrayLike, *,
                  coef: float | jax.Array, mode: str,
                  norm_constant: float | None = None) -> Deferred:
  """The entropy bonus ``-coef * agg(H, M, mode)`` as a loss term.

  verl ``actor.entropy_coeff`` (default 0): ``loss -= coeff * agg_loss(H, M,
  loss_agg_mode)``; TRL ``entropy_coef`` (default 0.0) likewise uses the
  token set and normaliser of the loss. Pass the loss's own ``mode`` (and
  ``norm_constant``) so both terms share one denominator. Add ``.value`` to
  the loss; under micro-batching, ``combine`` the bonus parts of the
  micro-batches with each other (never with the policy loss's parts: the
  weights are summed) and add the values. For TRL's
  ``top_entropy_quantile`` the bonus acts on the same tokens as the loss:
  pass ``mask & top_entropy_mask(...)``.

  Args:
    entropy_BxGxT: per-token entropy with its gradient (e.g. from
      :func:`entropy_from_logits` of the current policy).
    mask_BxGxT: bool, valid tokens.
    coef: the bonus coefficient (>= 0 to reward entropy); may be traced,
      e.g. the ``effective_coef`` of :func:`adaptive_entropy_coef`.
    mode: an aggregation mode of ``_aggregation.AGGREGATIONS``.
    norm_constant: C for ``seq_mean_token_sum_norm``.

  Returns:
    ``Deferred(-coef * total, weight)``; ``.value`` is the term to add to the
    loss being minimised.
  """
  what = "entropy_bonus"
  _common.check_tokens(what, mask_BxGxT, entropy_BxGxT=entropy_BxGxT)
  agg = _aggregation.aggregate(jnp.asarray(entropy_BxGxT), mask_BxGxT, mode,
                               norm_constant=norm_constant)
  return Deferred(-coef * agg.total, agg.weight)


def targeted_entropy(entropy_BxGxT: jax.typing.ArrayLike,
                     mask_BxGxT: jax.typing.ArrayLike, *,
                     target: float | jax.Array = 0.55,
                     coef: float | jax.Array = 0.001,
                     entropy_mean: jax.typing.ArrayLike | None = None,
                     mode: str = "token_mean",
                     norm_constant: float | None = None) -> Deferred:
  """Targeted entropy regularisation: ``coef * |mean H - target|``.

  See Wu et al., Confucius3-Math (arXiv 2506.18330), TER: ``loss +=
  entropy_coeff * |entropy_loss - entropy_target|`` with ``entropy_target =
  0.55`` and ``entropy_coeff = 0.001``, a two-sided pull of the mean token
  entropy toward the target (estimators reference §2.13).

  The mean ``H̄`` is the global token mean (``mode="token_mean"``, the
  default; the paper's ``entropy_loss`` is verl's ``agg_loss`` of the
  entropy, so another ``mode`` can be passed to match the loss's
  aggregation). ``|·|`` of a ratio does not add across micro-batches, so
  the term is returned in linearised form: with ``s = sign(sg(H̄) -
  target)``, ``total = coef * s * (agg.total - target * agg.weight)`` and
  ``weight = agg.weight``. Its value is ``coef * |H̄ - target|`` and its
  gradient ``coef * s * d H̄``, exactly, **provided ``s`` comes from the
  full-batch mean**: by default ``H̄`` is this call's own mean (exact when the
  call sees the whole batch); under micro-batching pass the full-batch mean
  as ``entropy_mean`` (e.g. from a first, gradient-free pass), and the
  micro-batch parts then ``combine`` to the exact full-batch value and
  gradient. At ``H̄ = target`` the sign, the value and the gradient are 0.

  Args:
    entropy_BxGxT: per-token entropy with its gradient.
    mask_BxGxT: bool, valid tokens.
    target: the entropy target in nats (paper: 0.55); may be traced.
    coef: the coefficient (paper: 0.001); may be traced.
    entropy_mean: optional precomputed full-batch mean of the entropy under
      ``mode`` (a scalar; its gradient is stopped). Only its side of
      ``target`` is used.
    mode: aggregation mode of the mean (default ``token_mean``).
    norm_constant: C for ``seq_mean_token_sum_norm``.

  Returns:
    ``Deferred``; ``.value`` is the term to add to the loss being minimised.
  """
  what = "targeted_entropy"
  _common.check_tokens(what, mask_BxGxT, entropy_BxGxT=entropy_BxGxT)
  agg = _aggregation.aggregate(jnp.asarray(entropy_BxGxT), mask_BxGxT, mode,
                               norm_constant=norm_constant)
  if entropy_mean is None:
    mean = agg.value
  else:
    if jnp.ndim(entropy_mean) != 0:
      raise ValueError(f"{what}: entropy_mean must be a scalar, got shape "
                       f"{jnp.shape(entropy_mean)}.")
    mean = jnp.asarray(entropy_mean, agg.total.dtype)
  sign = jnp.sign(jax.lax.stop_gradient(mean) - target)
  total = coef * sign * (agg.total - target * agg.weight)
  return Deferred(total, agg.weight)


def top_entropy_mask(entropy_BxGxT: jax.typing.ArrayLike,
                     mask_BxGxT: jax.typing.ArrayLike, *,
                     quantile_rho: float | jax.Array) -> jax.Array:
  """Keeps the valid tokens whose entropy is in the top ρ share.

  TRL ``top_entropy_quantile`` ρ (default 1.0): a token is kept when its
  entropy is ``>=`` the ``(1 - ρ)`` quantile of the entropies of all valid
  tokens of the batch passed in (TRL gathers them over processes; under a
  global ``jit`` this batch is global; under micro-batching it is the
  micro-batch's, as in TRL).

  Quantile convention: linear interpolation between order statistics
  (``torch.quantile`` / ``numpy.quantile`` default, Hyndman-Fan type 7):
  with the ``n`` valid entropies sorted, ``h = (1 - ρ)(n - 1)`` and the
  threshold is ``x[floor h] + (h - floor h)(x[ceil h] - x[floor h])``. Ties
  at the threshold are all kept (``>=``), so more than ``ρ n`` tokens can
  survive; ``ρ = 1`` gives the minimum and keeps every valid token. No valid
  token gives an all-False mask.

  Args:
    entropy_BxGxT: per-token entropy (only its values are used).
    mask_BxGxT: bool, valid tokens.
    quantile_rho: ρ in (0, 1], the share of tokens kept; may be traced.

  Returns:
    ``[B, G, T]`` bool mask, False at invalid tokens.
  """
  what = "top_entropy_mask"
  _common.check_tokens(what, mask_BxGxT, entropy_BxGxT=entropy_BxGxT)
  if _checks.is_concrete(quantile_rho) and not 0 < float(quantile_rho) <= 1:
    raise ValueError(f"{what}: quantile_rho must be in (0, 1], got "
                     f"{quantile_rho!r}.")
  mask = jnp.asarray(mask_BxGxT)
  h = jax.lax.stop_gradient(jnp.asarray(entropy_BxGxT))
  values = jnp.sort(jnp.where(mask, h, jnp.inf).reshape(-1))
  n = jnp.sum(mask)
  pos = (1 - jnp.asarray(quantile_rho, h.dtype)) * jnp.maximum(n - 1, 0)
  lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, values.shape[0] - 1)
  hi = jnp.clip(jnp.ceil(pos).astype(jnp.int32), 0, values.shape[0] - 1)
  v_lo, v_hi = values[lo], values[hi]
  frac = pos - lo.astype(h.dtype)
  threshold = jnp.where(v_hi > v_lo, v_lo + frac * (v_hi - v_lo), v_lo)
  return mask & (h >= threshold)


class AdaptiveEntropyCoefState(NamedTuple):
  """State of :func:`adaptive_entropy_coef`."""

  coef: jax.Array  # shape=(), dtype=float32; the controller's coefficient
  effective_coef: jax.Array  # shape=(), dtype=float32; coef to apply next


class AdaptiveEntropyCoef(NamedTuple):
  """An ``(init, update)`` pair; see :func:`adaptive_entropy_coef`."""

  init: Callable[[], AdaptiveEntropyCoefState]
  update: Callable[[jax.typing.ArrayLike, AdaptiveEntropyCoefState],
                   AdaptiveEntropyCoefState]


def adaptive_entropy_coef(*, init_coef: float | jax.Array,
                          coef_min: float = 0.0, coef_max: float = 1.0,
                          delta: float = 0.005, target: float = 0.2,
                          gate_open_at_init: bool = False
                          ) -> AdaptiveEntropyCoef:
  """Adaptive entropy coefficient (TRL ``use_adaptive_entropy``).

  After He et al., Skywork-OR1 (arXiv 2505.22312), as in TRL: after each
  optimiser step with measured mean token entropy ``H``, ``coef <-
  clip(coef + delta, min, max)`` if ``H <= target`` else ``clip(coef -
  delta, min, max)``; the bonus of the next step uses ``effective_coef =
  coef`` if that ``H <= target`` else 0 (TRL gates on the entropy of the
  previous optimiser step so that all micro-batches of a step apply the same
  coefficient). Pass ``state.effective_coef`` as ``coef`` to
  :func:`entropy_bonus`; log ``state.coef``.

  TRL defaults: ``entropy_coef_min`` 0, ``entropy_coef_max`` 1,
  ``entropy_coef_delta`` 0.005, ``entropy_target`` 0.2 nats. ``H`` should be
  the global token mean of the step (TRL sums entropy and token counts over
  the accumulation window and the processes), e.g. ``token_mean(H, M).value``
  of the combined micro-batches.

  Before the first update no entropy has been measured; TRL's initial gate
  state is not documented in the reference, so it is the explicit flag
  ``gate_open_at_init`` (default False: ``effective_coef`` starts at 0, i.e.
  no bonus until an entropy at or below the target has been seen).

  Args:
    init_coef: the starting coefficient (TRL ``entropy_coef``), in
      ``[coef_min, coef_max]`` (checked when concrete).
    coef_min: lower bound of the coefficient.
    coef_max: upper bound of the coefficient.
    delta: the step of the coefficient per update.
    target: the entropy target in nats.
    gate_open_at_init: whether the first step applies ``init_coef``.

  Returns:
    ``AdaptiveEntropyCoef(init, update)``: ``init() -> state`` and
    ``update(entropy_mean, state) -> state``, both jittable.
  """
  what = "adaptive_entropy_coef"
  values = {"init_coef": init_coef, "coef_min": coef_min,
            "coef_max": coef_max, "delta": delta}
  for name, v in values.items():
    _checks.check_nonnegative(name, v, what=what)
  if all(_checks.is_concrete(v) for v in (init_coef, coef_min, coef_max)):
    if not float(coef_min) <= float(init_coef) <= float(coef_max):
      raise ValueError(
          f"{what}: init_coef must lie in [coef_min, coef_max] = "
          f"[{coef_min}, {coef_max}], got {init_coef!r}.")

  def init_fn() -> AdaptiveEntropyCoefState:
    coef = jnp.asarray(init_coef, jnp.float32)
    gate = jnp.asarray(gate_open_at_init, jnp.float32)
    return AdaptiveEntropyCoefState(coef=coef, effective_coef=coef * gate)

  def update_fn(entropy_mean, state):
    if jnp.ndim(entropy_mean) != 0:
      raise ValueError(f"{what}: entropy_mean must be a scalar, got shape "
                       f"{jnp.shape(entropy_mean)}.")
    low = jnp.asarray(entropy_mean, jnp.float32) <= target
    step = jnp.where(low, delta, -delta)
    coef = jnp.clip(state.coef + step, coef_min, coef_max)
    coef = coef.astype(jnp.float32)
    effective = jnp.where(low, coef, 0).astype(jnp.float32)
    return AdaptiveEntropyCoefState(coef=coef, effective_coef=effective)

  return AdaptiveEntropyCoef(init=init_fn, update=update_fn)
