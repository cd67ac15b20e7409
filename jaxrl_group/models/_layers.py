"""Building blocks of the decoder: RMSNorm, RoPE and grouped attention.

Pure functions on arrays. Attention is written once, for the layout the
sampler and the learner share: queries ``[B, G, T, H, Dh]`` attend to an
optional per-prompt prefix ``[B, P, K, Dh]`` (the prompt, computed once per
group and never copied G times) and to their own keys ``[B, G, S, K, Dh]``.
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
  var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
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


def attention(q_BxGxTxHxDh: jax.Array, k_BxGxSxKxDh: jax.Array,
              v_BxGxSxKxDh: jax.Array, mask_BxGxTxS: jax.Array, *,
              prefix_k_BxPxKxDh: jax.Array | None = None,
              prefix_v_BxPxKxDh: jax.Array | None = None,
              prefix_mask_BxP: jax.Array | None = None) -> jax.Array:
  """Grouped-query attention of G samples over a shared prefix and their own keys.

  Args:
    q_BxGxTxHxDh: queries, already rotated.
    k_BxGxSxKxDh: the samples' own keys (rotated), K key/value heads.
    v_BxGxSxKxDh: the samples' own values.
    mask_BxGxTxS: which own keys each query sees (causal and padding);
      dimensions of size 1 broadcast.
    prefix_k_BxPxKxDh: optional keys shared by the G samples of a prompt.
    prefix_v_BxPxKxDh: their values.
    prefix_mask_BxP: which prefix keys are real tokens.

  Returns:
    ``[B, G, T, H, Dh]`` attention outputs in the queries' dtype.
  """
  b, g, t, h, dh = q_BxGxTxHxDh.shape
  kh = k_BxGxSxKxDh.shape[-2]
  q = q_BxGxTxHxDh.reshape(b, g, t, kh, h // kh, dh) * jnp.asarray(
      dh ** -0.5, q_BxGxTxHxDh.dtype)
  f32 = jnp.float32
  s_own = jnp.einsum("bgtkrd,bgskd->bgkrts", q, k_BxGxSxKxDh,
                     preferred_element_type=f32)
  s_own = jnp.where(mask_BxGxTxS[:, :, None, None], s_own, NEG_INF)
  parts = [s_own]
  if prefix_k_BxPxKxDh is not None:
    s_pre = jnp.einsum("bgtkrd,bpkd->bgkrtp", q, prefix_k_BxPxKxDh,
                       preferred_element_type=f32)
    pmask = prefix_mask_BxP[:, None, None, None, None, :]
    parts.insert(0, jnp.where(pmask, s_pre, NEG_INF))
  s = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
  p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
  s_len = k_BxGxSxKxDh.shape[2]
  out = jnp.einsum("bgkrts,bgskd->bgtkrd", p[..., p.shape[-1] - s_len:],
                   v_BxGxSxKxDh)
  if prefix_k_BxPxKxDh is not None:
    n_pre = prefix_k_BxPxKxDh.shape[1]
    out = out + jnp.einsum("bgkrtp,bpkd->bgtkrd", p[..., :n_pre],
                           prefix_v_BxPxKxDh)
  return out.reshape(b, g, t, h, dh)
