"""A Qwen2 / Llama decoder: pure functions over a parameter dict, and an NNX module.

The parameters are one nested dict of arrays whose per-layer entries are
stacked on a leading ``layers`` axis, so every pass over a sequence is a
``lax.scan`` over layers and compile time does not grow with depth. Three
entry points share one layer body (:func:`jaxrl_group.models.attention`
covers them all):

- :func:`forward`: a plain causal pass over ``[B, S]`` tokens (teacher
  forcing, parity with Hugging Face, SFT);
- :func:`prefill`: runs each prompt once and returns its keys and values;
- :func:`extend`: G completions per prompt, all attending to that one
  prompt cache (the learner's pass over a rollout).

The sampler's step, :func:`decode_step`, feeds one token of each of the G
samples of every prompt. It runs once per generated token, so its weights
(:func:`decode_params`) and caches (:func:`init_decode_cache`) are laid
out for it once per rollout, with layers unrolled by default
(``ModelConfig.decode_layers``), and its attention is
:func:`jaxrl_group.models.decode_attention`.

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


class DecodeParams(NamedTuple):
  """The weights a decode step reads, laid out once per rollout.

  Each layer's q/k/v projections are concatenated into one ``[D, (H + 2K)
  Dh]`` matrix (one matmul instead of three narrow ones). With
  ``cfg.decode_layers == "unrolled"``, ``layers`` is a tuple of per-layer
  dicts: a decode step then reads every layer's weights where they lie,
  whereas a loop over a stacked ``[L, ...]`` axis copies each layer's slice
  on every token (on XLA's CPU backend, these copies and those of the
  caches' slices took about a sixth of a bench-tiny rollout). With
  ``"scan"`` it is one dict of stacked arrays. Build it with
  :func:`decode_params`, outside the decode loop.
  """
  layers: tuple[dict[str, jax.Array], ...] | dict[str, jax.Array]
  head: dict[str, jax.Array]   # embed, final_norm (and lm_head if untied)


def decode_params(params: Params, cfg: ModelConfig) -> DecodeParams:
  """Lays out ``params`` for :func:`decode_step` (a copy of the weights).

  Args:
    params: the parameter dict.
    cfg: the model's shape; ``cfg.decode_layers`` picks the layout.

  Returns:
    A :class:`DecodeParams` with, per layer, ``attn_norm``, ``w_qkv``
    ``[D, (H + 2K) Dh]`` (and ``b_qkv`` with q/k/v biases), ``wo``
    ``[H Dh, D]``, ``mlp_norm``, ``w_gate``, ``w_up`` and ``w_down``.
  """
  lp = params["layers"]
  l, d = cfg.num_layers, cfg.d_model
  stacked = {
      "attn_norm": lp["attn_norm"],
      "w_qkv": jnp.concatenate(
          [lp[n].reshape(l, d, -1) for n in ("wq", "wk", "wv")], axis=2),
      "wo": lp["wo"].reshape(l, -1, d),
      **{n: lp[n] for n in ("mlp_norm", "w_gate", "w_up", "w_down")},
  }
  if cfg.qkv_bias:
    stacked["b_qkv"] = jnp.concatenate(
        [lp[n].reshape(l, -1) for n in ("bq", "bk", "bv")], axis=1)
  head = {k: params[k] for k in ("embed", "final_norm", "lm_head")
          if k in params}
  if cfg.decode_layers == "scan":
    return DecodeParams(stacked, head)
  return DecodeParams(
      tuple({k: v[i] for k, v in stacked.items()} for i in range(l)), head)


class DecodeCache(NamedTuple):
  """Everything a decode step attends to.

  The prompt's keys and values are those of the :class:`PromptCache`,
  shared by the G samples of each prompt (never copied G times); the
  samples' own keys and values fill ``T = max_len`` slots. Keys are stored
  transposed (``Dh`` before the positions), the layout
  :func:`~jaxrl_group.models.decode_attention` reduces over; values are
  head-major. The per-layer fields hold a tuple of L arrays of the named
  shape (``cfg.decode_layers == "unrolled"``: a step writes into each in
  place) or one array with a leading L axis (``"scan"``).
  """
  prompt_kt_BxKxDhxP: tuple[jax.Array, ...] | jax.Array
  prompt_v_BxKxPxDh: tuple[jax.Array, ...] | jax.Array
  prompt_mask_BxP: jax.Array
  prompt_lengths_B: jax.Array
  # RoPE angles of the T generated positions of each prompt's samples,
  # computed once: inside the step XLA would recompute sin and cos in every
  # fusion that reads them (per head and per layer).
  rope_cos_BxTxDh: jax.Array
  rope_sin_BxTxDh: jax.Array
  kt_BxGxKxDhxT: tuple[jax.Array, ...] | jax.Array
  v_BxGxKxTxDh: tuple[jax.Array, ...] | jax.Array


def init_decode_cache(cfg: ModelConfig, cache: PromptCache, group: int,
                      max_len: int) -> DecodeCache:
  """The decode cache of ``group`` samples per prompt of ``cache``.

  Args:
    cfg: the model's shape; ``cfg.decode_layers`` picks the layout.
    cache: the prompts' :class:`PromptCache` from :func:`prefill`.
    group: G, samples per prompt.
    max_len: T, the most tokens generated per sample.

  Returns:
    A :class:`DecodeCache` holding the prompt keys (transposed once) and
    zeros for ``max_len`` generated tokens of each of the ``B x G``
    samples.
  """
  l, b = cfg.num_layers, cache.mask_BxP.shape[0]
  kv, dh = cfg.num_kv_heads, cfg.head_dim
  per_layer = (lambda x: x) if cfg.decode_layers == "scan" else tuple
  positions_BxT = cache.lengths_B[:, None] + jnp.arange(
      max_len, dtype=jnp.int32)[None]
  cos, sin = _layers.rope_cos_sin(positions_BxT, _layers.rope_inv_freq(cfg))
  return DecodeCache(
      prompt_kt_BxKxDhxP=per_layer(jnp.swapaxes(cache.k_LxBxKxPxDh, -1, -2)),
      prompt_v_BxKxPxDh=per_layer(cache.v_LxBxKxPxDh),
      prompt_mask_BxP=cache.mask_BxP, prompt_lengths_B=cache.lengths_B,
      rope_cos_BxTxDh=cos[:, :, 0], rope_sin_BxTxDh=sin[:, :, 0],
      kt_BxGxKxDhxT=per_layer(
          jnp.zeros((l, b, group, kv, dh, max_len), cfg.jnp_dtype)),
      v_BxGxKxTxDh=per_layer(
          jnp.zeros((l, b, group, kv, max_len, dh), cfg.jnp_dtype)))


def _decode_qkv(w, cfg, x_NxD, cos, sin, b, g):
  """A layer's rotated q ``[B, G, H, Dh]`` and new k, v ``[B, G, K, Dh]``."""
  h, k, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  qkv = _layers.rms_norm(x_NxD, w["attn_norm"], cfg.norm_eps) @ _cast(
      w["w_qkv"], cfg)
  if cfg.qkv_bias:
    qkv = qkv + _cast(w["b_qkv"], cfg).reshape(1, -1)
  q = _layers.rotate(qkv[:, :h * dh].reshape(b, g, h, dh), cos, sin)
  new_k = _layers.rotate(qkv[:, h * dh:(h + k) * dh].reshape(b, g, k, dh),
                         cos, sin)
  return q, new_k, qkv[:, (h + k) * dh:].reshape(b, g, k, dh)


def _write_kv(ckt, cv, new_k, new_v, step, lead=()):
  """Writes a token's k, v at ``step`` (``lead``: leading layer index)."""
  ones = (1,) * len(lead)
  ckt = jax.lax.dynamic_update_slice(
      ckt, new_k.reshape(ones + new_k.shape + (1,)).astype(ckt.dtype),
      lead + (0, 0, 0, 0, step))
  b, g, k, dh = new_v.shape
  cv = jax.lax.dynamic_update_slice(
      cv, new_v.reshape(ones + (b, g, k, 1, dh)).astype(cv.dtype),
      lead + (0, 0, 0, step, 0))
  return ckt, cv


def decode_step(dparams: DecodeParams, cfg: ModelConfig,
                decode_cache: DecodeCache, tokens_BxG: jax.Array,
                step: jax.Array) -> tuple[jax.Array, DecodeCache]:
  """Feeds token ``step`` of every sample and returns the next-token logits.

  Args:
    dparams: the weights, from :func:`decode_params`.
    cfg: the model's shape (its ``decode_layers`` must be the one
      ``dparams`` and ``decode_cache`` were laid out with).
    decode_cache: from :func:`init_decode_cache`; the samples' entry
      ``step`` is written.
    tokens_BxG: the tokens at generated index ``step``.
    step: a scalar int32, 0-based index among the generated tokens.

  Returns:
    ``(logits_BxGxV, decode_cache)``.
  """
  scan = cfg.decode_layers == "scan"
  dc = decode_cache
  if (isinstance(dparams.layers, tuple) == scan
      or isinstance(dc.kt_BxGxKxDhxT, tuple) == scan):
    raise ValueError(
        f"decode_step: cfg.decode_layers={cfg.decode_layers!r}, but dparams "
        f"or decode_cache was laid out for the other setting; build both "
        f"with decode_params / init_decode_cache and this cfg.")
  b, g = tokens_BxG.shape
  step = jnp.asarray(step, jnp.int32)
  # This step's angles, [B, 1, 1, Dh]: shared by the G samples and heads.
  cos, sin = (jax.lax.dynamic_index_in_dim(a, step, axis=1, keepdims=False)[
      :, None, None] for a in (dc.rope_cos_BxTxDh, dc.rope_sin_BxTxDh))
  x = _embed(dparams.head, cfg, tokens_BxG.reshape(-1))

  def attend(q, ckt, cv, pkt, pv):
    return _layers.decode_attention(
        q, ckt, cv, step, prefix_kt_BxKxDhxP=pkt, prefix_v_BxKxPxDh=pv,
        prefix_mask_BxP=dc.prompt_mask_BxP)

  if scan:
    # The caches ride in the carry and are written in place at
    # [layer, ..., step]; reading a layer's slice copies it.
    def body(carry, xs):
      x, ckt, cv = carry
      w, pkt, pv, i = xs
      q, new_k, new_v = _decode_qkv(w, cfg, x, cos, sin, b, g)
      ckt, cv = _write_kv(ckt, cv, new_k, new_v, step, lead=(i,))
      x = _finish_layer(w, cfg, x, attend(q, ckt[i], cv[i], pkt, pv))
      return (x, ckt, cv), None

    layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    (x, ks, vs), _ = jax.lax.scan(
        body, (x, dc.kt_BxGxKxDhxT, dc.v_BxGxKxTxDh),
        (dparams.layers, dc.prompt_kt_BxKxDhxP, dc.prompt_v_BxKxPxDh,
         layers))
  else:
    ks, vs = list(dc.kt_BxGxKxDhxT), list(dc.v_BxGxKxTxDh)
    for i, w in enumerate(dparams.layers):
      q, new_k, new_v = _decode_qkv(w, cfg, x, cos, sin, b, g)
      ks[i], vs[i] = _write_kv(ks[i], vs[i], new_k, new_v, step)
      x = _finish_layer(w, cfg, x, attend(q, ks[i], vs[i],
                                          dc.prompt_kt_BxKxDhxP[i],
                                          dc.prompt_v_BxKxPxDh[i]))
    ks, vs = tuple(ks), tuple(vs)
  logits = unembed(dparams.head, cfg, x.reshape(b, g, -1))
  return logits, dc._replace(kt_BxGxKxDhxT=ks, v_BxGxKxTxDh=vs)


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
