"""Model shapes of the Qwen2 / Llama decoder family, by name.

The named shapes copy the published ``config.json`` values of each model
(vocabulary, widths, heads, RoPE base and scaling, norm epsilon, tying); the
weights come from a checkpoint on disk (:mod:`jaxrl_group.models.hf`) or a
random init. ``bench-tiny`` is the project's CPU benchmark model.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}
ROPE_SCALINGS = (None, "llama3")
REMAT_POLICIES = ("none", "matmuls", "full")
DECODE_LAYERS = ("unrolled", "scan")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Dimensions and conventions of a decoder-only transformer.

  Attributes:
    vocab_size: V, the number of token ids.
    d_model: the residual width D.
    num_layers: L.
    num_heads: H query heads.
    num_kv_heads: K key/value heads (grouped-query attention; H % K == 0).
    head_dim: width of one head.
    mlp_dim: F, the SwiGLU hidden width.
    rope_theta: RoPE base.
    rope_scaling: ``None`` or ``"llama3"`` (Llama 3.1+ frequency scaling,
      with ``rope_factor``, ``rope_low_freq_factor``,
      ``rope_high_freq_factor`` and ``rope_original_max_len``).
    norm_eps: RMSNorm epsilon.
    qkv_bias: biases on the q, k and v projections (Qwen2: True).
    tie_embeddings: the output projection reuses the embedding matrix.
    max_seq_len: the longest sequence (prompt + completion) the model
      accepts; the sampler checks prompts against it.
    param_dtype: storage dtype of the parameters, a name in ``DTYPES``.
    dtype: compute dtype of matmuls; norms, softmax and logits stay float32.
    remat: what the backward pass of a layer keeps from the forward pass
      (``jax.checkpoint`` around the scanned layer): ``"none"`` keeps every
      intermediate autodiff wants; ``"matmuls"`` (default) keeps the outputs
      of the projections and MLP matmuls and recomputes the cheap rest
      (norms, RoPE, attention, SwiGLU), which saves memory and, on CPU,
      time spent writing and reading activations; ``"full"`` keeps only
      each layer's input and recomputes the layer (least memory, about a
      third more compute). ``False`` and ``True`` mean ``"none"`` and
      ``"full"``.
    decode_layers: how the sampler's decode step runs the layers.
      ``"unrolled"`` (default) gives each layer its own weight and cache
      arrays, laid out once per rollout, and unrolls the layers in the
      step, so no token copies a layer's slice of a stacked array; its
      compile time grows with depth (the 24-layer ``qwen2.5-0.5b`` sampler
      compiles in 4-5 s on the 2-core CPU, against 2.3 s scanned).
      ``"scan"`` keeps them stacked and scans over layers: compile time
      flat in depth, but XLA's CPU backend copies each layer's weights and
      cache slice on every token.
    init_std: standard deviation of the random normal init (HF's
      ``initializer_range``).
  """
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float = 10_000.0
  rope_scaling: str | None = None
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = False
  max_seq_len: int = 2048
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat: str = "matmuls"
  decode_layers: str = "unrolled"
  init_std: float = 0.02

  def __post_init__(self):
    if isinstance(self.remat, bool):
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat must be one of {REMAT_POLICIES} "
                       f"(or a bool), got {self.remat!r}.")
    if self.decode_layers not in DECODE_LAYERS:
      raise ValueError(f"ModelConfig.decode_layers must be one of "
                       f"{DECODE_LAYERS}, got {self.decode_layers!r}.")
    for f in ("vocab_size", "d_model", "num_layers", "num_heads",
              "num_kv_heads", "head_dim", "mlp_dim", "max_seq_len"):
      v = getattr(self, f)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"ModelConfig.{f} must be a positive int, got {v!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of "
          f"num_kv_heads ({self.num_kv_heads}) for grouped-query attention.")
    if self.head_dim % 2:
      raise ValueError(
          f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}.")
    for f in ("param_dtype", "dtype"):
      if getattr(self, f) not in DTYPES:
        raise ValueError(f"ModelConfig.{f} must be one of {sorted(DTYPES)}, "
                         f"got {getattr(self, f)!r}.")
    if self.rope_scaling not in ROPE_SCALINGS:
      raise ValueError(f"ModelConfig.rope_scaling must be one of "
                       f"{ROPE_SCALINGS}, got {self.rope_scaling!r}.")

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **overrides: Any) -> "ModelConfig":
    return dataclasses.replace(self, **overrides)

  def num_params(self) -> int:
    """The number of parameters (embedding counted once when tied)."""
    d, f, l = self.d_model, self.mlp_dim, self.num_layers
    hq = self.num_heads * self.head_dim
    hkv = self.num_kv_heads * self.head_dim
    per_layer = 2 * d + d * (hq + 2 * hkv) + hq * d + 3 * d * f
    if self.qkv_bias:
      per_layer += hq + 2 * hkv
    n = self.vocab_size * d + l * per_layer + d
    return n if self.tie_embeddings else n + d * self.vocab_size

  def flops_per_token(self, context: int = 0) -> int:
    """Forward matmul FLOPs per token (2 per multiply-add).

    Args:
      context: the number of keys each query attends to, for the attention
        score and value products (0 leaves attention out).
    """
    d, f = self.d_model, self.mlp_dim
    hq = self.num_heads * self.head_dim
    hkv = self.num_kv_heads * self.head_dim
    per_layer = d * (hq + 2 * hkv) + hq * d + 3 * d * f
    attn = 2 * hq * context
    return 2 * (self.num_layers * (per_layer + attn)
                + d * self.vocab_size)


_QWEN25 = dict(rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True,
               max_seq_len=32_768)
_LLAMA3 = dict(rope_theta=500_000.0, norm_eps=1e-5, rope_scaling="llama3",
               rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
               rope_original_max_len=8192, max_seq_len=131_072)

CONFIGS: dict[str, ModelConfig] = {
    # The shared CPU benchmark model: a Qwen2-style character-level decoder.
    "bench-tiny": ModelConfig(
        vocab_size=64, d_model=256, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=64, mlp_dim=1024, rope_theta=10_000.0,
        norm_eps=1e-6, qkv_bias=True, tie_embeddings=False, max_seq_len=512),
    # For tests and quick runs.
    "tiny": ModelConfig(
        vocab_size=64, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, mlp_dim=256, qkv_bias=True, max_seq_len=256),
    "qwen2.5-0.5b": ModelConfig(
        vocab_size=151_936, d_model=896, num_layers=24, num_heads=14,
        num_kv_heads=2, head_dim=64, mlp_dim=4864, tie_embeddings=True,
        **_QWEN25),
    "qwen2.5-1.5b": ModelConfig(
        vocab_size=151_936, d_model=1536, num_layers=28, num_heads=12,
        num_kv_heads=2, head_dim=128, mlp_dim=8960, tie_embeddings=True,
        **_QWEN25),
    "qwen2.5-7b": ModelConfig(
        vocab_size=152_064, d_model=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, head_dim=128, mlp_dim=18_944, tie_embeddings=False,
        **_QWEN25),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128_256, d_model=2048, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, mlp_dim=8192, tie_embeddings=True,
        rope_factor=32.0, **_LLAMA3),
    "llama-3.1-8b": ModelConfig(
        vocab_size=128_256, d_model=4096, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, mlp_dim=14_336, tie_embeddings=False,
        rope_factor=8.0, **_LLAMA3),
}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named shape, with fields replaced by ``overrides``.

  Raises:
    ValueError: an unknown name (the message lists the known ones) or an
      unknown field.
  """
  if name not in CONFIGS:
    raise ValueError(f"Unknown model {name!r}; known models: "
                     f"{', '.join(sorted(CONFIGS))}.")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"Unknown ModelConfig field(s) {unknown}; fields are "
                     f"{sorted(fields)}.")
  return CONFIGS[name].replace(**overrides)
