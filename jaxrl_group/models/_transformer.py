"""A Qwen2 / Llama decoder: pure functions over a parameter dict, and an NNX module.

The parameters are one nested dict of arrays whose per-layer entries are
stacked on a leading ``layers`` axis, so every pass is a ``lax.scan`` over
layers and compile time does not grow with depth. Four entry points share
one layer body (:func:`jaxrl_group.models.attention` covers them all):

- :func:`forward`: a plain causal pass over ``[B, S]`` tokens (teacher
  forcing, parity with Hugging Face, SFT);
- :func:`prefill`: runs each prompt once and returns its keys and values;
- :func:`extend`: G completions per prompt, all attending to that one
  prompt cache (the learner's pass over a rollout);
- :func:`decode_step`: one token for each of the G samples of every prompt,
  writing into a fixed-size :class:`DecodeCache` (the sampler's step).

:class:`Transformer` is the Flax NNX face of the same parameters: its
``nnx.Param`` variables carry logical axis names (``vocab``, ``embed``,
``heads``, ``kv_heads``, ``head_dim``, ``mlp``, ``layers``) that
:mod:`jaxrl_group.parallel` maps onto mesh axes.
"""

from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.models import _layers
from jaxrl_group.models._config import ModelConfig

Params = dict[str, Any]


def param_table(cfg: ModelConfig) -> dict[str, Any]:
  """The parameter tree as ``{name: (shape, logical axes, init)}`` leaves."""
  l, d, h, k = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads
  dh, f, v = cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  layers = {
      "attn_norm": ((l, d), ("layers", "embed"), "ones"),
      "wq": ((l, d, h, dh), ("layers", "embed", "heads", "head_dim"),
             "normal"),
      "wk": ((l, d, k, dh), ("layers", "embed", "kv_heads", "head_dim"),
             "normal"),
      "wv": ((l, d, k, dh), ("layers", "embed", "kv_heads", "head_dim"),
             "normal"),
      "wo": ((l, h, dh, d), ("layers", "heads", "head_dim", "embed"),
             "normal"),
      "mlp_norm": ((l, d), ("layers", "embed"), "ones"),
      "w_gate": ((l, d, f), ("layers", "embed", "mlp"), "normal"),
      "w_up": ((l, d, f), ("layers", "embed", "mlp"), "normal"),
      "w_down": ((l, f, d), ("layers", "mlp", "embed"), "normal"),
  }
  if cfg.qkv_bias:
    layers["bq"] = ((l, h, dh), ("layers", "heads", "head_dim"), "zeros")
    layers["bk"] = ((l, k, dh), ("layers", "kv_heads", "head_dim"), "zeros")
    layers["bv"] = ((l, k, dh), ("layers", "kv_heads", "head_dim"), "zeros")
  table = {
      "embed": ((v, d), ("vocab", "embed"), "normal"),
      "layers": layers,
      "final_norm": ((d,), ("embed",), "ones"),
  }
  if not cfg.tie_embeddings:
    table["lm_head"] = ((d, v), ("embed", "vocab"), "normal")
  return table


def _is_entry(x) -> bool:
  return isinstance(x, tuple) and len(x) == 3 and isinstance(x[0], tuple)


def param_axes(cfg: ModelConfig) -> dict[str, Any]:
  """Logical axis names of every parameter, a dict of tuples like the params."""
  return jax.tree.map(lambda e: e[1], param_table(cfg), is_leaf=_is_entry)


def param_shapes(cfg: ModelConfig) -> dict[str, Any]:
  """``jax.ShapeDtypeStruct`` of every parameter."""
  return jax.tree.map(
      lambda e: jax.ShapeDtypeStruct(e[0], cfg.jnp_param_dtype),
      param_table(cfg), is_leaf=_is_entry)


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
  """Random parameters: normal(0, ``init_std``) matrices, unit norms, zero biases.

  Jittable; to create the parameters already sharded, jit it with
  ``out_shardings`` (no device ever holds the whole model).
  """
  table = param_table(cfg)
  leaves, treedef = jax.tree.flatten(table, is_leaf=_is_entry)
  keys = jax.random.split(key, len(leaves))
  dtype = cfg.jnp_param_dtype

  def make(entry, k):
    shape, _, init = entry
    if init == "ones":
      return jnp.ones(shape, dtype)
    if init == "zeros":
      return jnp.zeros(shape, dtype)
    return (cfg.init_std * jax.random.normal(k, shape, jnp.float32)).astype(
        dtype)

  return jax.tree.unflatten(
      treedef, [make(e, k) for e, k in zip(leaves, keys)])


class PromptCache(NamedTuple):
  """Keys and values of B prompts, computed once and shared by their G samples.

  Head-major (``K`` before the positions), the layout attention reads.
  """
  k_LxBxKxPxDh: jax.Array
  v_LxBxKxPxDh: jax.Array
  mask_BxP: jax.Array      # True on real (not left-padding) prompt tokens.
  lengths_B: jax.Array     # int32 prompt lengths; the first new position.


class DecodeCache(NamedTuple):
  """Keys and values of the generated tokens, ``[L, B, G, K, T, Dh]``.

  Head-major like :class:`PromptCache`: a decode step's attention reads a
  layer's cache as it lies, without a transposed copy.
  """
  k_LxBxGxKxTxDh: jax.Array
  v_LxBxGxKxTxDh: jax.Array


def _cast(x, cfg):
  return x.astype(cfg.jnp_dtype)


def _embed(params, cfg, tokens):
  return jnp.take(params["embed"], tokens, axis=0).astype(cfg.jnp_dtype)


def unembed(params: Params, cfg: ModelConfig, h: jax.Array) -> jax.Array:
  """Final norm and output projection: hidden ``[..., D]`` -> float32 logits."""
  h = _layers.rms_norm(h, params["final_norm"], cfg.norm_eps)
  if cfg.tie_embeddings:
    return jnp.einsum("...d,vd->...v", h, _cast(params["embed"], cfg),
                      preferred_element_type=jnp.float32)
  return jnp.einsum("...d,dv->...v", h, _cast(params["lm_head"], cfg),
                    preferred_element_type=jnp.float32)


def _project_qkv(lp, cfg, h_NxD, positions_N, inv_freq):
  """q ``[N, H, Dh]``, k and v ``[N, K, Dh]`` of rows (q and k rotated)."""
  d = h_NxD.shape[-1]

  def proj(w, b):
    # A plain 2-D matmul on rows (see _finish_layer).
    out = h_NxD @ _cast(lp[w], cfg).reshape(d, -1)
    if cfg.qkv_bias:
      out = out + _cast(lp[b], cfg).reshape(1, -1)
    return out.reshape(h_NxD.shape[0], -1, cfg.head_dim)

  q = _layers.apply_rope(proj("wq", "bq"), positions_N, inv_freq)
  k = _layers.apply_rope(proj("wk", "bk"), positions_N, inv_freq)
  return q, k, proj("wv", "bv")


def _finish_layer(lp, cfg, x_NxD, attn_NxHxDh):
  """Output projection, residual, and the SwiGLU MLP block, on rows.

  Layers work on rows flattened to ``[B * G * T, D]``: plain 2-D matmuls
  keep XLA's CPU backward pass from materialising transposed copies of the
  4-D activations for every weight gradient (about a third of the
  learner's time on bench-step before this layout).
  """
  d = x_NxD.shape[-1]
  hk = attn_NxHxDh.shape[-2] * attn_NxHxDh.shape[-1]
  rows = x_NxD + attn_NxHxDh.reshape(-1, hk) @ _cast(
      lp["wo"], cfg).reshape(hk, d)
  h = _layers.rms_norm(rows, lp["mlp_norm"], cfg.norm_eps)
  gate = h @ _cast(lp["w_gate"], cfg)
  up = h @ _cast(lp["w_up"], cfg)
  return rows + (jax.nn.silu(gate) * up) @ _cast(lp["w_down"], cfg)


def _heads_major(x_NxKxDh, lead):
  """Rows' keys or values ``[N, K, Dh]`` as ``[*lead, K, S, Dh]``."""
  x = x_NxKxDh.reshape(lead + x_NxKxDh.shape[-2:])
  return jnp.swapaxes(x, -3, -2)


def _scan_layers(cfg, body, carry, xs):
  if cfg.remat == "full":
    body = jax.checkpoint(body, prevent_cse=False)
  elif cfg.remat == "matmuls":
    # Our projections and MLP matmuls are the only dots without batch
    # dimensions (attention's have them): exactly those outputs are kept.
    body = jax.checkpoint(
        body, prevent_cse=False,
        policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  return jax.lax.scan(body, carry, xs)


def _check_tokens(what, name, tokens, cfg):
  if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
    raise TypeError(f"{what}: {name} must hold integer token ids, got dtype "
                    f"{jnp.result_type(tokens)}.")
  if _checks.is_concrete(tokens):
    t = jax.device_get(tokens)
    if t.size and (t.min() < 0 or t.max() >= cfg.vocab_size):
      raise ValueError(
          f"{what}: {name} has ids outside [0, vocab_size={cfg.vocab_size}): "
          f"min {t.min()}, max {t.max()}.")


def _self_stack(params, cfg, tokens_BxS, positions_BxS, mask_BxS):
  """The causal pass shared by forward and prefill; returns (h, k, v)."""
  b, s = tokens_BxS.shape
  inv_freq = _layers.rope_inv_freq(cfg)
  causal = jnp.tril(jnp.ones((s, s), bool))
  attn_mask = (causal[None] & mask_BxS[:, None, :])[:, None]   # [B,1,S,S]
  pos = positions_BxS.reshape(-1)

  def body(x, lp):
    h = _layers.rms_norm(x, lp["attn_norm"], cfg.norm_eps)
    q, k, v = _project_qkv(lp, cfg, h, pos, inv_freq)
    k_b, v_b = _heads_major(k, (b, s)), _heads_major(v, (b, s))
    out = _layers.attention(q.reshape(b, 1, s, *q.shape[1:]), k_b[:, None],
                            v_b[:, None], attn_mask)
    return _finish_layer(lp, cfg, x, out.reshape(q.shape)), (k_b, v_b)

  x = _embed(params, cfg, tokens_BxS).reshape(b * s, -1)
  x, (k, v) = _scan_layers(cfg, body, x, params["layers"])
  return x.reshape(b, s, -1), k, v


def forward(params: Params, cfg: ModelConfig, tokens_BxS: jax.Array, *,
            positions_BxS: jax.Array | None = None,
            mask_BxS: jax.Array | None = None,
            return_hidden: bool = False) -> jax.Array:
  """A causal forward pass over ``[B, S]`` tokens.

  Args:
    params: the parameter dict (:func:`init_params` or a loaded checkpoint).
    cfg: the model's shape.
    tokens_BxS: integer token ids.
    positions_BxS: RoPE positions; by default the count of real tokens
      before each one (so left padding does not shift positions).
    mask_BxS: True on real tokens; padding keys are never attended to.
      Default: all True.
    return_hidden: return the final hidden states ``[B, S, D]`` (before the
      final norm) instead of logits, e.g. for a chunked log-prob.

  Returns:
    ``[B, S, V]`` float32 logits (or hidden states).
  """
  what = "forward"
  sizes = _checks.check_named("tokens_BxS", tokens_BxS, what=what)
  _check_tokens(what, "tokens_BxS", tokens_BxS, cfg)
  if mask_BxS is None:
    mask_BxS = jnp.ones(tokens_BxS.shape, bool)
  _checks.check_named("mask_BxS", mask_BxS, sizes, what=what)
  mask_BxS = jnp.asarray(mask_BxS, bool)
  if positions_BxS is None:
    positions_BxS = jnp.maximum(jnp.cumsum(mask_BxS, axis=-1) - 1, 0)
  _checks.check_named("positions_BxS", positions_BxS, sizes, what=what)
  h, _, _ = _self_stack(params, cfg, tokens_BxS, positions_BxS, mask_BxS)
  return h if return_hidden else unembed(params, cfg, h)


def prompt_layout(prompt_lengths_B: jax.Array, p: int):
  """Mask and positions of left-padded prompts of width ``p``."""
  lengths = jnp.asarray(prompt_lengths_B, jnp.int32)
  idx = jnp.arange(p, dtype=jnp.int32)[None]
  pad = (p - lengths)[:, None]
  return idx >= pad, jnp.maximum(idx - pad, 0)


def prefill(params: Params, cfg: ModelConfig, prompts_BxP: jax.Array,
            prompt_lengths_B: jax.Array) -> tuple[jax.Array, PromptCache]:
  """Runs each left-padded prompt once.

  Args:
    params: the parameter dict.
    cfg: the model's shape.
    prompts_BxP: integer ids, left-padded (the last prompt token at P - 1).
    prompt_lengths_B: the number of real tokens of each prompt, >= 1.

  Returns:
    ``(logits_BxV, cache)``: float32 logits of the next token after each
    prompt, and the :class:`PromptCache` its G samples share.
  """
  what = "prefill"
  sizes = _checks.check_named("prompts_BxP", prompts_BxP, what=what)
  _checks.check_named("prompt_lengths_B", prompt_lengths_B, sizes, what=what)
  _check_tokens(what, "prompts_BxP", prompts_BxP, cfg)
  mask, positions = prompt_layout(prompt_lengths_B, prompts_BxP.shape[1])
  h, k, v = _self_stack(params, cfg, prompts_BxP, positions, mask)
  logits = unembed(params, cfg, h[:, -1])
  lengths = jnp.asarray(prompt_lengths_B, jnp.int32)
  return logits, PromptCache(k, v, mask, lengths)


def extend(params: Params, cfg: ModelConfig, cache: PromptCache,
           tokens_BxGxT: jax.Array, *,
           return_hidden: bool = False) -> jax.Array:
  """Teacher-forced pass of G continuations per prompt over the shared cache.

  Token t of sample g sits at position ``prompt_length + t`` and attends to
  its prompt (from ``cache``, computed once for the group) and to its own
  tokens up to t. Tokens after a sample's end (right padding) only affect
  positions after it, which a loss masks out.

  Args:
    params: the parameter dict.
    cfg: the model's shape.
    cache: the prompts' :class:`PromptCache` from :func:`prefill`.
    tokens_BxGxT: the continuations.
    return_hidden: return hidden states ``[B, G, T, D]`` instead of logits.

  Returns:
    ``[B, G, T, V]`` float32 logits: entry t predicts token t + 1 (the logits
    for token 0 are :func:`prefill`'s).
  """
  what = "extend"
  sizes = _checks.check_named("tokens_BxGxT", tokens_BxGxT, what=what)
  _checks.check_named("cache.lengths_B", cache.lengths_B, sizes, what=what)
  _check_tokens(what, "tokens_BxGxT", tokens_BxGxT, cfg)
  b, g, t = tokens_BxGxT.shape
  inv_freq = _layers.rope_inv_freq(cfg)
  pos = cache.lengths_B[:, None, None] + jnp.arange(t, dtype=jnp.int32)[
      None, None]
  pos = jnp.broadcast_to(pos, (b, g, t)).reshape(-1)
  causal = jnp.tril(jnp.ones((t, t), bool))[None, None]

  def body(x, xs):
    lp, pk, pv = xs
    h = _layers.rms_norm(x, lp["attn_norm"], cfg.norm_eps)
    q, k, v = _project_qkv(lp, cfg, h, pos, inv_freq)
    out = _layers.attention(
        q.reshape(b, g, t, *q.shape[1:]), _heads_major(k, (b, g, t)),
        _heads_major(v, (b, g, t)), causal, prefix_k_BxKxPxDh=pk,
        prefix_v_BxKxPxDh=pv, prefix_mask_BxP=cache.mask_BxP)
    return _finish_layer(lp, cfg, x, out.reshape(q.shape)), None

  x = _embed(params, cfg, tokens_BxGxT).reshape(b * g * t, -1)
  x, _ = _scan_layers(cfg, body, x, (params["layers"], cache.k_LxBxKxPxDh,
                                     cache.v_LxBxKxPxDh))
  x = x.reshape(b, g, t, -1)
  return x if return_hidden else unembed(params, cfg, x)


def init_decode_cache(cfg: ModelConfig, batch: int, group: int,
                      max_len: int) -> DecodeCache:
  """Zeros for ``max_len`` generated tokens of ``batch x group`` samples."""
  shape = (cfg.num_layers, batch, group, cfg.num_kv_heads, max_len,
           cfg.head_dim)
  z = jnp.zeros(shape, cfg.jnp_dtype)
  return DecodeCache(z, z)


def decode_step(params: Params, cfg: ModelConfig, cache: PromptCache,
                decode_cache: DecodeCache, tokens_BxG: jax.Array,
                step: jax.Array) -> tuple[jax.Array, DecodeCache]:
  """Feeds token ``step`` of every sample and returns the next-token logits.

  Args:
    params: the parameter dict.
    cfg: the model's shape.
    cache: the shared :class:`PromptCache`.
    decode_cache: the generated tokens' keys and values; entry ``step`` is
      written.
    tokens_BxG: the tokens at generated index ``step``.
    step: a scalar int32, 0-based index among the generated tokens.

  Returns:
    ``(logits_BxGxV, decode_cache)``.
  """
  inv_freq = _layers.rope_inv_freq(cfg)
  b, g = tokens_BxG.shape
  max_len = decode_cache.k_LxBxGxKxTxDh.shape[4]
  step = jnp.asarray(step, jnp.int32)
  pos = jnp.broadcast_to(cache.lengths_B[:, None] + step, (b, g)).reshape(-1)
  seen = (jnp.arange(max_len) <= step)[None, None, None]

  # The caches ride in the scan carry and are updated in place, so a step
  # writes one position instead of copying the whole cache.
  def body(carry, xs):
    x, ck, cv = carry
    lp, pk, pv, layer = xs
    h = _layers.rms_norm(x, lp["attn_norm"], cfg.norm_eps)
    q, k, v = _project_qkv(lp, cfg, h, pos, inv_freq)
    # [B*G, K, Dh] -> [1, B, G, K, 1, Dh]: a reshape, as T = 1.
    new_shape = (1, b, g, cfg.num_kv_heads, 1, cfg.head_dim)
    start = (layer, 0, 0, 0, step, 0)
    ck = jax.lax.dynamic_update_slice(
        ck, k.reshape(new_shape).astype(ck.dtype), start)
    cv = jax.lax.dynamic_update_slice(
        cv, v.reshape(new_shape).astype(cv.dtype), start)
    out = _layers.attention(q.reshape(b, g, 1, *q.shape[1:]), ck[layer],
                            cv[layer], seen, prefix_k_BxKxPxDh=pk,
                            prefix_v_BxKxPxDh=pv,
                            prefix_mask_BxP=cache.mask_BxP)
    return (_finish_layer(lp, cfg, x, out.reshape(q.shape)), ck, cv), None

  x = _embed(params, cfg, tokens_BxG.reshape(-1))
  layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
  (x, ck, cv), _ = jax.lax.scan(
      body, (x, decode_cache.k_LxBxGxKxTxDh, decode_cache.v_LxBxGxKxTxDh),
      (params["layers"], cache.k_LxBxKxPxDh, cache.v_LxBxKxPxDh, layers))
  return unembed(params, cfg, x.reshape(b, g, -1)), DecodeCache(ck, cv)


class _Params(nnx.Module):
  """A bag of ``nnx.Param`` built from a dict, keeping the dict's keys."""

  def __init__(self, values: dict[str, Any], axes: dict[str, Any]):
    for name, value in values.items():
      if isinstance(value, dict):
        setattr(self, name, _Params(value, axes[name]))
      else:
        # eager_sharding=False: the names are logical; the train step maps
        # them to mesh axes (jaxrl_group.parallel) and places the arrays.
        setattr(self, name, nnx.Param(value, out_sharding=axes[name],
                                      eager_sharding=False))


class Transformer(nnx.Module):
  """The decoder as a Flax NNX module over the same parameter dict.

  ``nnx.split(model, nnx.Param)`` / ``nnx.to_pure_dict`` give the dict the
  pure functions (:func:`forward`, :func:`prefill`, ...) take; every
  ``nnx.Param`` carries its logical axis names as ``out_sharding``.

  Example::

    model = Transformer(get_model_config("tiny"), rngs=nnx.Rngs(0))
    logits_BxSxV = model(tokens_BxS)
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs | None = None,
               params: Params | None = None):
    if (rngs is None) == (params is None):
      raise ValueError("Transformer needs exactly one of rngs= (random init) "
                       "or params= (given weights).")
    self.config = config
    if params is None:
      params = init_params(config, rngs.params())
    axes = param_axes(config)
    for name, value in params.items():
      if name not in axes:
        raise ValueError(f"Transformer: unexpected parameter {name!r}; "
                         f"expected {sorted(axes)}.")
      if isinstance(value, dict):
        setattr(self, name, _Params(value, axes[name]))
      else:
        setattr(self, name, nnx.Param(value, out_sharding=axes[name],
                                      eager_sharding=False))

  def param_dict(self) -> Params:
    """The parameters as a nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(self, nnx.Param))

  def __call__(self, tokens_BxS: jax.Array, *,
               positions_BxS: jax.Array | None = None,
               mask_BxS: jax.Array | None = None) -> jax.Array:
    """Logits ``[B, S, V]`` of a causal pass; see :func:`forward`."""
    return forward(self.param_dict(), self.config, tokens_BxS,
                   positions_BxS=positions_BxS, mask_BxS=mask_BxS)
