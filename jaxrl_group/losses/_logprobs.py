"""Log-probabilities of the sampled tokens, from logits, whole or chunked.

``log pi(y_t) = z_{t, y_t} - logsumexp_v z_{t, v}`` with ``z = logits / tau``
(tau the sampling temperature, as verl and TRL divide the logits before the
log-softmax). The whole version never forms ``log_softmax(z)``: it takes the
row maximum of the raw logits, one fused ``sum exp`` reduction and the gathered
logit, so that under ``jit`` no second ``[B, T, V]`` float32 array is
materialised in the forward pass (low-precision logits are upcast inside the
reductions). The chunked version also bounds the memory of the backward pass:
it walks over the T axis in chunks with a custom VJP that recomputes each
chunk's softmax from the logits, so the only ``[B, T, V]`` array it creates is
the gradient itself.

The chunk machinery (:func:`chunked_over_t`) is shared with
``_entropy.entropy_from_logits_chunked``.
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype the reductions run in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def check_logits(what: str, logits_BxTxV: jax.typing.ArrayLike) -> None:
  """Checks ``logits_BxTxV``: floating, rank >= 2 (``[..., T, V]``)."""
  if jnp.ndim(logits_BxTxV) < 2:
    raise ValueError(
        f"{what}: logits_BxTxV must have rank >= 2 (shape [..., T, V]), got "
        f"shape {jnp.shape(logits_BxTxV)}.")
  _checks.check_floating("logits_BxTxV", logits_BxTxV, what=what)


def _check_tokens(what: str, logits_BxTxV, tokens_BxT) -> None:
  _checks.check_integer("tokens_BxT", tokens_BxT, what=what)
  want = tuple(jnp.shape(logits_BxTxV))[:-1]
  if tuple(jnp.shape(tokens_BxT)) != want:
    raise ValueError(
        f"{what}: tokens_BxT must have shape logits_BxTxV.shape[:-1] = {want}, "
        f"got {tuple(jnp.shape(tokens_BxT))}.")
  vocab = jnp.shape(logits_BxTxV)[-1]
  if _checks.is_concrete(tokens_BxT):
    t = np.asarray(tokens_BxT)
    if t.size and (t.min() < 0 or t.max() >= vocab):
      raise ValueError(
          f"{what}: tokens_BxT must lie in [0, V) = [0, {vocab}), got values "
          f"in [{t.min()}, {t.max()}].")


def check_temperature(what: str, temperature) -> None:
  """Raises a ValueError for a concrete temperature <= 0 (tracers pass)."""
  if jnp.ndim(temperature) != 0:
    raise ValueError(f"{what}: temperature must be a scalar, got shape "
                     f"{jnp.shape(temperature)}.")
  if _checks.is_concrete(temperature) and not float(temperature) > 0:
    raise ValueError(f"{what}: temperature must be > 0, got {temperature!r}.")


def check_chunk_size(what: str, chunk_size) -> None:
  """Raises a ValueError unless ``chunk_size`` is a Python int >= 1."""
  if (isinstance(chunk_size, bool)
      or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"{what}: chunk_size must be a Python int >= 1 (a static "
                     f"number of T positions per chunk), got {chunk_size!r}.")


def row_max(logits: jax.Array, dtype) -> jax.Array:
  """The row maximum ``[..., 1]`` as a constant (0 for all -inf rows)."""
  m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  m = m.astype(dtype)
  return jnp.where(jnp.isfinite(m), m, 0)


def _logprobs_rows(logits: jax.Array, tokens: jax.Array,
                   t: jax.Array) -> jax.Array:
  """log-softmax(logits / t) at ``tokens``, ``[...]``, in the compute dtype.

  ``max_v z = max_v logits / t`` for ``t > 0``, so the shift is taken on the
  raw logits and the divide fuses into the single ``sum exp`` reduction.
  """
  dtype = t.dtype
  m = row_max(logits, dtype)
  s = jnp.sum(jnp.exp((logits.astype(dtype) - m) / t), axis=-1)
  picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1,
                               mode="fill", fill_value=jnp.nan)[..., 0]
  return (picked.astype(dtype) - m[..., 0]) / t - jnp.log(s)


@functools.partial(jax.jit, inline=True)
def _logprobs_whole(logits, tokens, t):
  return _logprobs_rows(logits, tokens, t)


def _logprobs_rows_grad(logits, tokens, t, g):
  """Cotangents of :func:`_logprobs_rows` for the logits and per token for t.

  d logp / d z_v = 1[v = y] - p_v and d logp / d t = -(z_y - E_p z) / t.
  """
  dtype = t.dtype
  m = row_max(logits, dtype)
  d = (logits.astype(dtype) - m) / t
  e = jnp.exp(d)
  p = e / jnp.sum(e, axis=-1, keepdims=True)
  onehot = jnp.arange(logits.shape[-1])[None, None, :] == tokens[..., None]
  dlogits = g[..., None] * (onehot.astype(dtype) - p) / t
  mean_d = jnp.sum(jnp.where(p > 0, p * d, 0), axis=-1)
  d_y = jnp.take_along_axis(d, tokens[..., None], axis=-1)[..., 0]
  dt = -g * (d_y - mean_d) / t
  return dlogits, dt


RowFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
RowGradFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array],
                     tuple[jax.Array, jax.Array]]


def chunked_over_t(row_fn: RowFn, row_grad_fn: RowGradFn):
  """Builds ``op(logits_LxTxV, aux_LxT, t, chunk) -> [L, T]`` over T chunks.

  ``row_fn(logits_c, aux_c, t)`` maps an ``[L, c, V]`` chunk to ``[L, c]``;
  ``row_grad_fn(logits_c, aux_c, t, g_c)`` returns the chunk's logits
  cotangent ``[L, c, V]`` and the per-token cotangent of ``t`` ``[L, c]``.
  Chunk ``i`` starts at ``min(i * c, T - c)``, so every chunk has the static
  size ``c`` and the last one overlaps its predecessor when ``c`` does not
  divide T: the overlapping tokens are recomputed and written twice with the
  same values, and counted once in the cotangent of ``t``. Both passes are
  ``fori_loop``s writing into one preallocated buffer (updated in place), and
  the backward pass recomputes the softmax of each chunk from the logits (the
  only residuals are the inputs), so the peak extra memory is O(L * c * V).
  """

  def forward(logits, aux, t, chunk):
    length = logits.shape[1]
    n = -(-length // chunk)
    if n == 1:
      return row_fn(logits, aux, t)

    def body(i, out):
      start = jnp.minimum(i * chunk, length - chunk)
      l_c = jax.lax.dynamic_slice_in_dim(logits, start, chunk, axis=1)
      a_c = jax.lax.dynamic_slice_in_dim(aux, start, chunk, axis=1)
      return jax.lax.dynamic_update_slice_in_dim(
          out, row_fn(l_c, a_c, t), start, axis=1)

    out = jnp.zeros(logits.shape[:2], t.dtype)
    return jax.lax.fori_loop(0, n, body, out)

  @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
  def op(logits, aux, t, chunk):
    return forward(logits, aux, t, chunk)

  def op_fwd(logits, aux, t, chunk):
    return forward(logits, aux, t, chunk), (logits, aux, t)

  def op_bwd(chunk, res, g):
    logits, aux, t = res
    length = logits.shape[1]
    n = -(-length // chunk)

    def body(i, carry):
      dlogits, dt = carry
      start = jnp.minimum(i * chunk, length - chunk)
      l_c = jax.lax.dynamic_slice_in_dim(logits, start, chunk, axis=1)
      a_c = jax.lax.dynamic_slice_in_dim(aux, start, chunk, axis=1)
      g_c = jax.lax.dynamic_slice_in_dim(g, start, chunk, axis=1)
      dl_c, dt_c = row_grad_fn(l_c, a_c, t, g_c)
      fresh = start + jnp.arange(chunk) >= i * chunk  # not seen before
      dt = dt + jnp.sum(jnp.where(fresh[None, :], dt_c, 0))
      dlogits = jax.lax.dynamic_update_slice_in_dim(
          dlogits, dl_c.astype(logits.dtype), start, axis=1)
      return dlogits, dt

    init = (jnp.zeros_like(logits), jnp.zeros((), t.dtype))
    dlogits, dt = jax.lax.fori_loop(0, n, body, init)
    return dlogits, None, dt

  op.defvjp(op_fwd, op_bwd)
  return op


_chunked_logprobs = chunked_over_t(_logprobs_rows, _logprobs_rows_grad)


def token_logprobs(logits_BxTxV: jax.typing.ArrayLike,
                   tokens_BxT: jax.typing.ArrayLike, *,
                   temperature: float | jax.Array = 1.0) -> jax.Array:
  """Log-probabilities of the given tokens under ``softmax(logits / tau)``.

  Computed as ``(z_y - max z) - log sum exp(z - max z)`` with ``z = logits /
  temperature``: the row maximum is taken on the raw logits and the divide
  and the upcast fuse into one reduction, so (under ``jit``; this function
  jits its core) no second ``[B, T, V]`` float32 array is formed in the
  forward pass. Gradients come from JAX autodiff (XLA may hold the softmax
  in the backward pass); use :func:`token_logprobs_chunked` to bound that
  memory too. A ``-inf`` logit (a banned token) has probability 0 and gives
  ``-inf`` when chosen; a row of only ``-inf`` logits gives NaN.

  Args:
    logits_BxTxV: ``[..., T, V]`` floating logits, e.g. ``[B, T, V]`` or
      ``[B, G, T, V]``; bfloat16 is upcast to float32 inside the reductions.
    tokens_BxT: ``[..., T]`` integer token ids in ``[0, V)`` (checked when
      concrete; under ``jit`` an out-of-range id gives NaN).
    temperature: the sampling temperature tau > 0 (verl and TRL divide the
      logits by it); may be a traced scalar.

  Returns:
    ``[..., T]`` log-probabilities, float32 (float64 for float64 logits).
  """
  what = "token_logprobs"
  check_logits(what, logits_BxTxV)
  _check_tokens(what, logits_BxTxV, tokens_BxT)
  check_temperature(what, temperature)
  logits = jnp.asarray(logits_BxTxV)
  t = jnp.asarray(temperature, compute_dtype(logits.dtype))
  return _logprobs_whole(logits, jnp.asarray(tokens_BxT), t)


def flatten_lead(x: jax.Array, n_trailing: int) -> jax.Array:
  """Merges the leading axes of ``x`` into one (a free reshape)."""
  trailing = x.shape[x.ndim - n_trailing:]
  lead = math.prod(x.shape[:x.ndim - n_trailing])
  return x.reshape((lead,) + tuple(trailing))


def token_logprobs_chunked(logits_BxTxV: jax.typing.ArrayLike,
                           tokens_BxT: jax.typing.ArrayLike, *,
                           chunk_size: int,
                           temperature: float | jax.Array = 1.0) -> jax.Array:
  """:func:`token_logprobs` computed ``chunk_size`` positions of T at a time.

  Same values and gradients (wrt the logits and the temperature) as
  :func:`token_logprobs`, with peak extra memory O(B * chunk_size * V) in the
  forward and the backward pass: a custom VJP recomputes each chunk's softmax
  instead of storing ``[B, T, V]`` residuals (the role of verl's
  ``entropy_checkpointing`` / chunked log-prob kernels), and writes the
  logits gradient chunk by chunk into one buffer. Every chunk spans all
  leading (batch) positions, so a batch sharded over devices stays evenly
  split. When ``chunk_size`` does not divide T the last chunk is shifted to
  end at T and overlaps the previous one (a few positions are recomputed);
  ``chunk_size >= T`` is a single chunk. Only reverse-mode first derivatives
  are defined (``jax.jvp`` and ``jax.hessian`` raise: it is a custom VJP).

  Args:
    logits_BxTxV: ``[..., T, V]`` floating logits.
    tokens_BxT: ``[..., T]`` integer token ids in ``[0, V)``.
    chunk_size: positions of T per chunk, a static Python int >= 1.
    temperature: the sampling temperature tau > 0; may be traced.

  Returns:
    ``[..., T]`` log-probabilities, float32 (float64 for float64 logits).
  """
  what = "token_logprobs_chunked"
  check_logits(what, logits_BxTxV)
  _check_tokens(what, logits_BxTxV, tokens_BxT)
  check_temperature(what, temperature)
  check_chunk_size(what, chunk_size)
  logits = jnp.asarray(logits_BxTxV)
  tokens = jnp.asarray(tokens_BxT)
  t = jnp.asarray(temperature, compute_dtype(logits.dtype))
  length = logits.shape[-2]
  if length == 0:
    return _logprobs_whole(logits, tokens, t)
  out = _chunked_logprobs(flatten_lead(logits, 2), flatten_lead(tokens, 1),
                          t, min(int(chunk_size), length))
  return out.reshape(tokens.shape)
