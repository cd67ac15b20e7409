"""Building blocks of the decoder: RMSNorm, RoPE and grouped attention.

Pure functions on arrays. Attention is written once, for the layout the
sampler and the learner share: queries ``[B, G, T, H, Dh]`` attend to an
optional per-prompt prefix ``[B, K, P, Dh]`` (the prompt, computed once per
group and never copied G times) and to their own keys ``[B, G, K, S, Dh]``.
A plain forward pass is the case ``G = 1`` without a prefix.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group.models._config import ModelConfig

# A large finite negative instead of -inf: a query whose keys are all masked
# (a left-padding position) then gets a uniform, finite softmax; its output is
# never used, and no NaN can reach the gradients through it.
NEG_INF = -1e30


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm over the last axis, in float32, as Qwen2 / Llama compute it."""
  x32 = x.astype(jnp.float32)
  # The mean over a 2-D view: in a profile of the sampler, XLA's CPU
  # backend ran this reduction on a [B, G, 1, D] array many times slower
  # than on the same values as rows.
  var = jnp.mean(jnp.square(x32.reshape(-1, x.shape[-1])), axis=-1,
                 keepdims=True).reshape(x.shape[:-1] + (1,))
  y = (x32 * jax.lax.rsqrt(var + eps)).astype(x.dtype)
  # Explicit broadcast: the scale is [D], x any rank (rank promotion may be
  # disabled).
  return y * scale.astype(x.dtype).reshape((1,) * (x.ndim - 1) + (-1,))


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """RoPE inverse frequencies ``[head_dim / 2]`` (float32), with scaling.

  ``rope_scaling="llama3"`` applies Llama 3.1's rule: wavelengths longer than
  ``original_max_len / low_freq_factor`` are divided by ``factor``, shorter
  than ``original_max_len / high_freq_factor`` kept, and the band between
  interpolated smoothly.
  """
  dim = cfg.head_dim
  exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
  inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** exponents)).astype(
      np.float32)
  if cfg.rope_scaling == "llama3":
    factor = cfg.rope_factor
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old = cfg.rope_original_max_len
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def rope_cos_sin(positions: jax.Array,
                 inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """``(cos, sin)`` of RoPE angles ``[..., T, 1, Dh]`` for ``positions [..., T]``.

  Computed once and shared by queries and keys (and, in a decode step, by
  every layer).
  """
  inv = jnp.asarray(inv_freq).reshape((1,) * positions.ndim + (-1,))
  freqs = positions.astype(jnp.float32)[..., None] * inv
  emb = jnp.concatenate([freqs, freqs], axis=-1)[..., None, :]
  return jnp.cos(emb), jnp.sin(emb)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Applies RoPE angles from :func:`rope_cos_sin` to ``x [..., T, N, Dh]``.

  The half-split ("rotate half") layout of the Hugging Face Qwen2 and Llama
  checkpoints: dimension i pairs with i + Dh/2.
  """
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array,
               inv_freq: np.ndarray) -> jax.Array:
  """Rotates ``x [..., T, N, Dh]`` by its ``positions [..., T]`` (RoPE)."""
  return rotate(x, *rope_cos_sin(positions, inv_freq))


def attention(q_BxGxTxHxDh: jax.Array, k_BxGxKxSxDh: jax.Array,
              v_BxGxKxSxDh: jax.Array, mask_BxGxTxS: jax.Array, *,
              prefix_k_BxKxPxDh: jax.Array | None = None,
              prefix_v_BxKxPxDh: jax.Array | None = None,
              prefix_mask_BxP: jax.Array | None = None) -> jax.Array:
  """Grouped-query attention of G samples over a shared prefix and their own keys.

  Keys and values are head-major (``K`` before the sequence axis), the
  layout of the caches: the score and output matmuls then batch over
  ``(B, G, K)`` without transposing a cache on every decode step.

  Args:
    q_BxGxTxHxDh: queries, already rotated.
    k_BxGxKxSxDh: the samples' own keys (rotated), K key/value heads.
    v_BxGxKxSxDh: the samples' own values.
    mask_BxGxTxS: which own keys each query sees (causal and padding);
      dimensions of size 1 broadcast.
    prefix_k_BxKxPxDh: optional keys shared by the G samples of a prompt.
    prefix_v_BxKxPxDh: their values.
    prefix_mask_BxP: which prefix keys are real tokens.

  Returns:
    ``[B, G, T, H, Dh]`` attention outputs in the queries' dtype.
  """
  b, g, t, h, dh = q_BxGxTxHxDh.shape
  kh = k_BxGxKxSxDh.shape[2]
  q = q_BxGxTxHxDh.reshape(b, g, t, kh, h // kh, dh) * jnp.asarray(
      dh ** -0.5, q_BxGxTxHxDh.dtype)
  f32 = jnp.float32
  s_own = jnp.einsum("bgtkrd,bgksd->bgkrts", q, k_BxGxKxSxDh,
                     preferred_element_type=f32)
  s_own = jnp.where(mask_BxGxTxS[:, :, None, None], s_own, NEG_INF)
  parts = [s_own]
  if prefix_k_BxKxPxDh is not None:
    s_pre = jnp.einsum("bgtkrd,bkpd->bgkrtp", q, prefix_k_BxKxPxDh,
                       preferred_element_type=f32)
    pmask = prefix_mask_BxP[:, None, None, None, None, :]
    parts.insert(0, jnp.where(pmask, s_pre, NEG_INF))
  s = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
  p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
  s_len = k_BxGxKxSxDh.shape[3]
  # Outputs in the matmuls' natural order, transposed once at the end (an
  # output order XLA's CPU backend cannot hand to its fast matmul runs as
  # thousands of tiny ones).
  out = jnp.einsum("bgkrts,bgksd->bgkrtd", p[..., p.shape[-1] - s_len:],
                   v_BxGxKxSxDh)
  if prefix_k_BxKxPxDh is not None:
    n_pre = prefix_k_BxKxPxDh.shape[2]
    out = out + jnp.einsum("bgkrtp,bkpd->bgkrtd", p[..., :n_pre],
                           prefix_v_BxKxPxDh)
  return jnp.moveaxis(out, 4, 2).reshape(b, g, t, h, dh)


def decode_attention(q_BxGxHxDh: jax.Array, kt_BxGxKxDhxT: jax.Array,
                     v_BxGxKxTxDh: jax.Array, step: jax.Array, *,
                     prefix_kt_BxKxDhxP: jax.Array,
                     prefix_v_BxKxPxDh: jax.Array,
                     prefix_mask_BxP: jax.Array) -> jax.Array:
  """One query per sample over the shared prefix and the sample's own tokens.

  The decode step's case of :func:`attention`, with the same result (up to
  rounding). With one query per sample, every own-key score and output is a
  vector times a small matrix for each (prompt, sample, head); XLA's CPU
  backend runs those as thousands of tiny matmuls. Written instead as
  multiply-and-reduce over keys stored transposed (``Dh`` before the
  positions: the sum over ``Dh`` then runs vectorised along contiguous
  positions), they become a few reductions (bench-tiny decode step: about
  2.8 ms of attention per token before, 1.3 ms after, in profiles). The
  prefix is shared by the G samples of a prompt, so its scores and outputs
  are real matmuls, one per (prompt, key/value head), whose rows are the
  ``G * H / K`` queries that read it: as a multiply-and-reduce, the
  prefix's broadcast over G was materialised on every layer and token (and
  when ``P == T`` XLA merged it with the own keys' broadcast, doubling the
  step's time; P = T = 64: 5x). The softmax is normalised after the value
  sum, so the prefix and own scores are never concatenated.

  Args:
    q_BxGxHxDh: the queries, already rotated; sample ``[b, g]``'s query
      sits at its own position ``step``.
    kt_BxGxKxDhxT: the samples' own keys, transposed; positions
      ``<= step`` are attended to (later ones must be finite, as the zeros
      of a fresh cache are: they get weight 0).
    v_BxGxKxTxDh: their values, likewise.
    step: the queries' own position (an int32 scalar).
    prefix_kt_BxKxDhxP: the keys shared by the G samples of a prompt,
      transposed.
    prefix_v_BxKxPxDh: their values.
    prefix_mask_BxP: which prefix keys are real tokens.

  Returns:
    ``[B, G, H, Dh]`` attention outputs in the queries' dtype.
  """
  b, g, h, dh = q_BxGxHxDh.shape
  kh, t = kt_BxGxKxDhxT.shape[2], kt_BxGxKxDhxT.shape[4]
  r = h // kh
  f32 = jnp.float32
  q = (q_BxGxHxDh.astype(f32) * dh ** -0.5).reshape(b, g, kh, r, dh, 1)
  s_own = jnp.sum(q * kt_BxGxKxDhxT[:, :, :, None].astype(f32), axis=-2)
  seen = jnp.arange(t, dtype=jnp.int32) <= step
  s_own = jnp.where(seen.reshape(1, 1, 1, 1, t), s_own, NEG_INF)
  # The prefix's queries grouped by (prompt, kv head): [B, K, G * r, Dh].
  q_pre = jnp.transpose(q[..., 0], (0, 2, 1, 3, 4)).reshape(b, kh, g * r, dh)
  s_pre = jnp.einsum("bkqd,bkdp->bkqp", q_pre,
                     prefix_kt_BxKxDhxP.astype(f32))
  s_pre = jnp.where(prefix_mask_BxP[:, None, None, :], s_pre, NEG_INF)

  def own_order(x_BxKxGR):  # [B, K, G * r] -> [B, G, K, r, 1]
    return jnp.transpose(x_BxKxGR.reshape(b, kh, g, r), (0, 2, 1, 3))[
        ..., None]

  def prefix_order(x_BxGxKxRx1):  # the inverse
    return jnp.transpose(x_BxGxKxRx1[..., 0], (0, 2, 1, 3)).reshape(
        b, kh, g * r, 1)

  m = jnp.maximum(jnp.max(s_own, axis=-1, keepdims=True),
                  own_order(jnp.max(s_pre, axis=-1)))
  e_own, e_pre = jnp.exp(s_own - m), jnp.exp(s_pre - prefix_order(m))
  denom = (jnp.sum(e_own, axis=-1, keepdims=True)
           + own_order(jnp.sum(e_pre, axis=-1)))
  out = jnp.sum(e_own[..., None] * v_BxGxKxTxDh[:, :, :, None].astype(f32),
                axis=-2)
  out_pre = jnp.einsum("bkqp,bkpd->bkqd", e_pre,
                       prefix_v_BxKxPxDh.astype(f32))
  out = out + jnp.transpose(out_pre.reshape(b, kh, g, r, dh), (0, 2, 1, 3, 4))
  return (out / denom).astype(q_BxGxHxDh.dtype).reshape(b, g, h, dh)
