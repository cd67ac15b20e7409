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


def apply_rope(x: jax.Array, positions: jax.Array,
               inv_freq: np.ndarray) -> jax.Array:
  """Rotates ``x [..., T, N, Dh]`` by its ``positions [..., T]``.

  The half-split ("rotate half") layout of the Hugging Face Qwen2 and Llama
  checkpoints: dimension i pairs with i + Dh/2.
  """
  inv = jnp.asarray(inv_freq).reshape((1,) * positions.ndim + (-1,))
  freqs = positions.astype(jnp.float32)[..., None] * inv
  emb = jnp.concatenate([freqs, freqs], axis=-1)[..., None, :]
  cos, sin = jnp.cos(emb), jnp.sin(emb)
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


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
