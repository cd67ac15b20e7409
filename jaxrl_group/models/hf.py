"""Hugging Face Qwen2 / Llama checkpoints: configs, loading and export.

A Hugging Face checkpoint directory holds ``config.json`` and the weights as
``model.safetensors`` or as shards listed in ``model.safetensors.index.json``.
:func:`load_hf_checkpoint` reads it into this package's parameter dict
(per-layer tensors stacked on a leading ``layers`` axis, projections laid
out ``[in, ..., out]``), tensor by tensor: with ``shardings`` every device
receives only its own slice, read straight from the file (each distinct
slice once), and the host holds one parameter at a time.
:func:`save_hf_checkpoint` writes the inverse, which
``transformers.AutoModelForCausalLM.from_pretrained`` loads.

Only ``safetensors`` is needed (the ``hf`` extra); torch and transformers
are not imported.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from jaxrl_group.models._config import DTYPES
from jaxrl_group.models._config import ModelConfig
from jaxrl_group.models._transformer import Params
from jaxrl_group.models._transformer import param_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}

# Defaults of the Hugging Face config classes for keys a config.json may omit.
_DEFAULT_MAX_POSITIONS = {"qwen2": 32_768, "llama": 2048}
_ROPE_TYPES = ("default", "llama3")
# Non-persistent RoPE buffers that old exports sometimes contain.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_SHARD_FILE = re.compile(r"^model-\d+-of-\d+\.safetensors$")


def _safetensors():
  """The safetensors package, or an ImportError naming the extra."""
  try:
    import safetensors  # pylint: disable=g-import-not-at-top
    # pylint: disable-next=g-import-not-at-top,unused-import
    import safetensors.numpy
  except ImportError as e:
    raise ImportError(
        "Hugging Face checkpoints need the 'safetensors' package; install the "
        "hf extra: pip install -e \".[hf]\"") from e
  return safetensors


def _dtype_name(dtype: Any, what: str) -> str:
  """A ``DTYPES`` key from a name or a numpy / jnp dtype."""
  try:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
  except TypeError:
    name = repr(dtype)
  if name not in DTYPES:
    raise ValueError(f"{what} must be one of {sorted(DTYPES)}, got "
                     f"{dtype!r}.")
  return name


# --------------------------------------------------------------------------
# Configs.
# --------------------------------------------------------------------------


def _rope_params(hf: Mapping[str, Any]) -> dict[str, Any]:
  """The one RoPE dict of a config, from either transformers layout.

  transformers >= 5 writes ``rope_parameters`` (``rope_type``,
  ``rope_theta`` and the scaling keys); earlier versions write a top-level
  ``rope_theta`` and a ``rope_scaling`` dict (or null). As in transformers,
  a ``rope_scaling`` dict wins over ``rope_parameters``.
  """
  params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
  if not isinstance(params, Mapping):
    raise ValueError(f"config.json: rope_parameters must be a dict, got "
                     f"{params!r}.")
  nested = [v for v in params.values() if isinstance(v, Mapping)]
  if nested:
    # Per-layer-type RoPE: supported only when every layer type agrees.
    if any(v != nested[0] for v in nested) or len(nested) != len(params):
      raise ValueError(
          "config.json: rope_parameters differs between layer types "
          f"({params!r}); only one RoPE for all layers is supported.")
    params = nested[0]
  params = dict(params)
  params.setdefault("rope_type", params.get("type", "default"))
  params.setdefault("rope_theta", hf.get("rope_theta", 10_000.0))
  return params


def _sliding_window_in_use(hf: Mapping[str, Any]) -> bool:
  """Qwen2's rule: windowed layers exist only with use_sliding_window."""
  if not hf.get("use_sliding_window", False):
    return False
  if hf.get("sliding_window") is None:
    return False
  layer_types = hf.get("layer_types")
  if layer_types is not None:
    return "sliding_attention" in layer_types
  return hf.get("max_window_layers", 28) < hf["num_hidden_layers"]


def _stored_dtype(hf: Mapping[str, Any], what: str) -> str:
  """The checkpoint's dtype name (``dtype``, or ``torch_dtype`` before v5)."""
  stored = hf.get("dtype", hf.get("torch_dtype"))
  if stored is None:
    raise ValueError(f"{what}: dtype 'auto' needs the checkpoint's dtype, but "
                     "config.json has no dtype (or torch_dtype); give one.")
  return _dtype_name(stored, "config.json: dtype")


def config_from_hf(config_json: Mapping[str, Any],
                   **overrides: Any) -> ModelConfig:
  """A :class:`ModelConfig` from a Qwen2 or Llama ``config.json`` dict.

  Args:
    config_json: the parsed ``config.json``.
    **overrides: :class:`ModelConfig` fields to set, e.g. ``dtype=
      "bfloat16"`` or ``remat=True``. ``param_dtype="auto"`` takes the
      checkpoint's ``dtype`` (``torch_dtype`` before transformers 5); by
      default parameters are float32.

  Returns:
    The model's shape and conventions.

  Raises:
    ValueError: an unsupported ``model_type``, ``architectures``,
      ``hidden_act``, RoPE type, ``partial_rotary_factor``, ``mlp_bias``,
      a sliding window in use, a missing required key, or an unknown
      override; the message names the field and its value.
  """
  hf = dict(config_json)
  model_type = hf.get("model_type")
  if model_type not in ARCHITECTURES:
    raise ValueError(
        f"config.json: model_type {model_type!r} is not supported; supported "
        f"model types: {sorted(ARCHITECTURES)}.")
  archs = hf.get("architectures")
  if archs is not None and list(archs) != [ARCHITECTURES[model_type]]:
    raise ValueError(
        f"config.json: architectures {archs!r} is not supported for "
        f"model_type {model_type!r}; expected "
        f"[{ARCHITECTURES[model_type]!r}].")
  required = ("vocab_size", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "intermediate_size")
  missing = [k for k in required if hf.get(k) is None]
  if missing:
    raise ValueError(f"config.json: missing required key(s) {missing}.")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"config.json: hidden_act {hf['hidden_act']!r} is not "
                     "supported; only 'silu' (SwiGLU) is.")
  if hf.get("mlp_bias", False):
    raise ValueError("config.json: mlp_bias True is not supported; the MLP "
                     "projections have no biases.")
  if _sliding_window_in_use(hf):
    raise ValueError(
        f"config.json: sliding_window {hf['sliding_window']!r} is in use "
        "(use_sliding_window is true); sliding-window attention is not "
        "supported.")
  rope = _rope_params(hf)
  if rope["rope_type"] not in _ROPE_TYPES:
    raise ValueError(
        f"config.json: rope_parameters.rope_type {rope['rope_type']!r} is "
        f"not supported; supported: {_ROPE_TYPES}.")
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(
        "config.json: partial_rotary_factor "
        f"{rope['partial_rotary_factor']!r} is not supported; RoPE must "
        "cover the whole head (1.0).")

  heads = hf["num_attention_heads"]
  max_positions = hf.get("max_position_embeddings",
                         _DEFAULT_MAX_POSITIONS[model_type])
  fields = dict(
      vocab_size=hf["vocab_size"],
      d_model=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      mlp_dim=hf["intermediate_size"],
      rope_theta=float(rope["rope_theta"]),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=(True if model_type == "qwen2"
                else bool(hf.get("attention_bias", False))),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_seq_len=max_positions,
      init_std=float(hf.get("initializer_range", 0.02)),
  )
  if rope["rope_type"] == "llama3":
    fields.update(
        rope_scaling="llama3",
        rope_factor=float(rope["factor"]),
        rope_low_freq_factor=float(rope["low_freq_factor"]),
        rope_high_freq_factor=float(rope["high_freq_factor"]),
        rope_original_max_len=int(rope.get("original_max_position_embeddings",
                                           max_positions)))
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"config_from_hf: unknown ModelConfig field(s) "
                     f"{unknown}; fields are {sorted(known)}.")
  overrides = dict(overrides)
  if overrides.get("param_dtype") == "auto":
    overrides["param_dtype"] = _stored_dtype(hf, "config_from_hf")
  fields.update(overrides)
  return ModelConfig(**fields)


def config_to_hf(cfg: ModelConfig, model_type: str = "qwen2") -> dict:
  """A ``config.json`` dict for ``cfg`` as a Qwen2 or Llama model.

  RoPE is written both as transformers 5's ``rope_parameters`` and as the
  older top-level ``rope_theta`` / ``rope_scaling``, so either version
  reads it. ``param_dtype`` becomes ``dtype``.

  Raises:
    ValueError: an unknown ``model_type``, or a config the architecture
      cannot express (Qwen2 always has q/k/v biases).
  """
  if model_type not in ARCHITECTURES:
    raise ValueError(f"config_to_hf: model_type must be one of "
                     f"{sorted(ARCHITECTURES)}, got {model_type!r}.")
  if model_type == "qwen2" and not cfg.qkv_bias:
    raise ValueError(
        "config_to_hf: Qwen2 always has q/k/v biases but cfg.qkv_bias is "
        "False; export with model_type='llama'.")
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling == "llama3":
    rope.update(rope_type="llama3", factor=cfg.rope_factor,
                low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor,
                original_max_position_embeddings=cfg.rope_original_max_len)
  hf = {
      "architectures": [ARCHITECTURES[model_type]],
      "model_type": model_type,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.d_model,
      "intermediate_size": cfg.mlp_dim,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len,
      "rms_norm_eps": cfg.norm_eps,
      "initializer_range": cfg.init_std,
      "tie_word_embeddings": cfg.tie_embeddings,
      "rope_parameters": rope,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": dict(rope) if cfg.rope_scaling else None,
      "attention_dropout": 0.0,
      "use_cache": True,
      "dtype": cfg.param_dtype,
  }
  if model_type == "qwen2":
    hf.update(use_sliding_window=False, sliding_window=None,
              max_window_layers=cfg.num_layers)
  else:
    hf.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
  return hf


# --------------------------------------------------------------------------
# The name and layout map between the two parameter trees.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Leaf:
  """How one of our parameters is laid out in the checkpoint.

  The Hugging Face tensor (``hf_shape``) is reshaped by splitting each of
  its dimensions into ``groups`` (e.g. ``H * Dh`` into ``(H, Dh)``), then
  transposed: our dimension i is view dimension ``perm[i]``. Per-layer
  leaves stack the tensors of every layer on a new leading axis.
  """
  path: tuple[str, ...]
  name: str                  # "{i}" stands for the layer index.
  groups: tuple[tuple[int, ...], ...]
  perm: tuple[int, ...]
  layered: bool

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return tuple(math.prod(g) for g in self.groups)

  @property
  def view_shape(self) -> tuple[int, ...]:
    return tuple(n for g in self.groups for n in g)

  def layer_shape(self) -> tuple[int, ...]:
    view = self.view_shape
    return tuple(view[p] for p in self.perm)

  def names(self, num_layers: int) -> list[str]:
    if not self.layered:
      return [self.name]
    return [self.name.format(i=i) for i in range(num_layers)]


def _leaves(cfg: ModelConfig) -> list[_Leaf]:
  """Every parameter of ``cfg`` with its checkpoint name and layout."""
  v, d, f = cfg.vocab_size, cfg.d_model, cfg.mlp_dim
  h, k, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  pre = "model.layers.{i}."
  out = [_Leaf(("embed",), "model.embed_tokens.weight", ((v,), (d,)),
               (0, 1), False)]

  def layer(key, name, groups, perm):
    out.append(_Leaf(("layers", key), pre + name, groups, perm, True))

  layer("attn_norm", "input_layernorm.weight", ((d,),), (0,))
  # torch Linear stores [out, in]; ours is [in, ..., out].
  layer("wq", "self_attn.q_proj.weight", ((h, dh), (d,)), (2, 0, 1))
  layer("wk", "self_attn.k_proj.weight", ((k, dh), (d,)), (2, 0, 1))
  layer("wv", "self_attn.v_proj.weight", ((k, dh), (d,)), (2, 0, 1))
  if cfg.qkv_bias:
    layer("bq", "self_attn.q_proj.bias", ((h, dh),), (0, 1))
    layer("bk", "self_attn.k_proj.bias", ((k, dh),), (0, 1))
    layer("bv", "self_attn.v_proj.bias", ((k, dh),), (0, 1))
  layer("wo", "self_attn.o_proj.weight", ((d,), (h, dh)), (1, 2, 0))
  layer("mlp_norm", "post_attention_layernorm.weight", ((d,),), (0,))
  layer("w_gate", "mlp.gate_proj.weight", ((f,), (d,)), (1, 0))
  layer("w_up", "mlp.up_proj.weight", ((f,), (d,)), (1, 0))
  layer("w_down", "mlp.down_proj.weight", ((d,), (f,)), (1, 0))
  out.append(_Leaf(("final_norm",), "model.norm.weight", ((d,),), (0,),
                   False))
  if not cfg.tie_embeddings:
    out.append(_Leaf(("lm_head",), "lm_head.weight", ((v,), (d,)), (1, 0),
                     False))
  return out


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


class _Reader:
  """Open safetensors files and the file that holds each tensor."""

  def __init__(self, path: str, stack: contextlib.ExitStack):
    st = _safetensors()
    single = os.path.join(path, WEIGHTS_FILE)
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
      files = [WEIGHTS_FILE]
    elif os.path.isfile(index):
      with open(index, encoding="utf-8") as fh:
        weight_map = json.load(fh).get("weight_map")
      if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: no 'weight_map' dict of tensor name -> "
                         "shard file.")
      files = sorted(set(weight_map.values()))
    else:
      raise FileNotFoundError(
          f"No weights in {path}: expected {WEIGHTS_FILE} or {INDEX_FILE} "
          "(with its shards).")
    self.where = {}
    for fname in files:
      fpath = os.path.join(path, fname)
      if not os.path.isfile(fpath):
        raise FileNotFoundError(f"Missing weights shard {fpath} (listed in "
                                f"{INDEX_FILE}).")
      handle = stack.enter_context(st.safe_open(fpath, framework="numpy"))
      for name in handle.keys():
        self.where[name] = handle

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.where[name].get_slice(name).get_shape())

  def dtype(self, name: str) -> str:
    return self.where[name].get_slice(name).get_dtype()

  def full(self, name: str) -> np.ndarray:
    return self.where[name].get_tensor(name)

  def block(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
    return self.where[name].get_slice(name)[index]


def _bounds(index: tuple[slice, ...], shape: tuple[int, ...]):
  """``(start, stop)`` per dimension of a callback index (unit steps)."""
  out = []
  for sl, n in zip(index, shape):
    start, stop, step = sl.indices(n)
    if step != 1:
      raise ValueError(f"Unsupported strided shard index {index}.")
    out.append((start, stop))
  return out


def _read_block(reader: _Reader, leaf: _Leaf, cfg: ModelConfig,
                index: tuple[slice, ...], dtype) -> np.ndarray:
  """Our parameter's block at ``index``, reading only what it needs."""
  full = ((cfg.num_layers,) if leaf.layered else ()) + leaf.layer_shape()
  bounds = _bounds(index, full)
  layer_range = range(*bounds[0]) if leaf.layered else [None]
  ours = bounds[1:] if leaf.layered else bounds
  view_bounds = [None] * len(leaf.perm)
  for i, p in enumerate(leaf.perm):
    view_bounds[p] = ours[i]
  # The first view dimension of each group is a contiguous range of the
  # checkpoint dimension; the inner ones are cut after the reshape.
  hf_index, view_shape, inner = [], [], []
  v = 0
  for group in leaf.groups:
    rest = math.prod(group[1:])
    a, b = view_bounds[v]
    hf_index.append(slice(a * rest, b * rest))
    view_shape.extend((b - a,) + group[1:])
    inner.append(slice(None))
    inner.extend(slice(*view_bounds[v + j]) for j in range(1, len(group)))
    v += len(group)
  blocks = []
  for i in layer_range:
    name = leaf.name.format(i=i) if leaf.layered else leaf.name
    x = reader.block(name, tuple(hf_index))
    x = x.reshape(view_shape)[tuple(inner)].transpose(leaf.perm)
    blocks.append(x.astype(dtype))
  if not leaf.layered:
    return np.ascontiguousarray(blocks[0])
  shape = (len(blocks),) + tuple(b - a for a, b in ours)
  return np.stack(blocks) if blocks else np.zeros(shape, dtype)


def _check_tensors(reader: _Reader, leaves: list[_Leaf], cfg: ModelConfig,
                   path: str) -> None:
  """Every expected tensor present with its shape; nothing unexpected."""
  expected = set()
  for leaf in leaves:
    for name in leaf.names(cfg.num_layers):
      expected.add(name)
      if name not in reader.where:
        raise ValueError(
            f"Checkpoint {path} is missing tensor {name!r} (shape "
            f"{list(leaf.hf_shape)}) that the config requires.")
      got = reader.shape(name)
      if got != leaf.hf_shape:
        raise ValueError(
            f"Checkpoint tensor {name!r} has shape {list(got)}, expected "
            f"{list(leaf.hf_shape)} from the config.")
      dt = reader.dtype(name)
      if dt not in ("F32", "BF16", "F16", "F64"):
        raise ValueError(f"Checkpoint tensor {name!r} has dtype {dt}; "
                         "expected a floating-point type.")
  optional = {f"model.layers.{i}.self_attn.o_proj.bias"
              for i in range(cfg.num_layers)}
  if cfg.tie_embeddings:
    optional.add("lm_head.weight")
  extra = sorted(n for n in reader.where
                 if n not in expected and n not in optional
                 and not _IGNORED.search(n))
  if extra:
    more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
    raise ValueError(
        f"Checkpoint {path} has tensor(s) the config does not use: "
        f"{extra[:10]}{more}. Check model_type, qkv_bias (attention_bias) "
        "and tie_word_embeddings.")


def _check_optional(reader: _Reader, cfg: ModelConfig) -> None:
  """Tensors we accept only when they change nothing."""
  for i in range(cfg.num_layers):
    name = f"model.layers.{i}.self_attn.o_proj.bias"
    if name in reader.where and np.any(reader.full(name) != 0):
      raise ValueError(
          f"Checkpoint tensor {name!r} is a nonzero output-projection bias, "
          "which this model does not support (q/k/v biases only).")
  if cfg.tie_embeddings and "lm_head.weight" in reader.where:
    embed = reader.full("model.embed_tokens.weight")
    head = reader.full("lm_head.weight")
    if head.shape != embed.shape or not np.array_equal(head, embed):
      raise ValueError(
          "Checkpoint has tie_word_embeddings but 'lm_head.weight' differs "
          "from 'model.embed_tokens.weight'; load it untied with "
          "config={'tie_embeddings': False}.")


def _flatten_shardings(shardings: Any, cfg: ModelConfig,
                       leaves: list[_Leaf]) -> list[Any]:
  """The sharding of each of ``leaves``, from a tree like the params."""
  abstract = param_shapes(cfg)
  treedef = jax.tree.structure(abstract)
  try:
    flat = treedef.flatten_up_to(shardings)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "load_hf_checkpoint: shardings must have the structure of the "
        f"parameters ({treedef}) with a jax.sharding.Sharding per leaf: "
        f"{e}") from e
  by_path = {}
  paths = [tuple(k.key for k in p)
           for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]]
  for p, s in zip(paths, flat):
    if not isinstance(s, jax.sharding.Sharding):
      raise ValueError(f"load_hf_checkpoint: shardings at {'/'.join(p)} "
                       f"must be a jax.sharding.Sharding, got {s!r}.")
    by_path[p] = s
  return [by_path[leaf.path] for leaf in leaves]


def load_hf_checkpoint(
    path: str | os.PathLike, *,
    config: ModelConfig | Mapping[str, Any] | None = None,
    dtype: Any = None,
    shardings: Any = None) -> tuple[ModelConfig, Params]:
  """Reads a Qwen2 / Llama safetensors checkpoint into our parameter dict.

  Args:
    path: the checkpoint directory.
    config: None to derive the config from ``config.json``; a mapping of
      :class:`ModelConfig` overrides applied to it (e.g. ``{"remat":
      True}``); or a :class:`ModelConfig` to use instead (then
      ``config.json`` is only read for ``dtype="auto"``).
    dtype: the parameters' storage dtype: a name in ``DTYPES`` or a
      numpy / jnp dtype, or ``"auto"`` for the checkpoint's ``dtype``.
      None keeps the config's ``param_dtype`` (float32 unless overridden).
      The returned config's ``param_dtype`` matches.
    shardings: optional tree like the parameters with a
      ``jax.sharding.Sharding`` per leaf. Each device then reads and
      receives only its slice. Without it, arrays go to the default device.

  Returns:
    ``(cfg, params)``.

  Raises:
    FileNotFoundError: a missing directory, ``config.json`` or weights file.
    ValueError: an unsupported config, a missing tensor, a tensor of the
      wrong shape, or unexpected tensors (each named).
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"Checkpoint directory {path} does not exist; expected a Hugging "
        f"Face directory with {CONFIG_FILE} and {WEIGHTS_FILE}.")
  hf_json = None
  if not isinstance(config, ModelConfig) or dtype == "auto":
    hf_json = _read_config(path)
  if isinstance(config, ModelConfig):
    cfg = config
  else:
    cfg = config_from_hf(hf_json, **dict(config or {}))
  if dtype == "auto":
    cfg = cfg.replace(param_dtype=_stored_dtype(hf_json, "load_hf_checkpoint"))
  elif dtype is not None:
    cfg = cfg.replace(param_dtype=_dtype_name(dtype, "load_hf_checkpoint: "
                                              "dtype"))
  leaves = _leaves(cfg)
  if shardings is None:
    leaf_shardings = [None] * len(leaves)
  else:
    leaf_shardings = _flatten_shardings(shardings, cfg, leaves)
  np_dtype = np.dtype(cfg.jnp_param_dtype)
  params: dict[str, Any] = {}
  with contextlib.ExitStack() as stack:
    reader = _Reader(path, stack)
    _check_tensors(reader, leaves, cfg, path)
    _check_optional(reader, cfg)
    for leaf, sharding in zip(leaves, leaf_shardings):
      shape = ((cfg.num_layers,) if leaf.layered else ()) + leaf.layer_shape()
      _set(params, leaf.path,
           _make_array(reader, leaf, cfg, shape, sharding, np_dtype))
  return cfg, params


def _make_array(reader: _Reader, leaf: _Leaf, cfg: ModelConfig,
                shape: tuple[int, ...],
                sharding: jax.sharding.Sharding | None,
                dtype: np.dtype) -> jax.Array:
  """One parameter, each device's block read from the checkpoint once."""
  if sharding is None:
    whole = tuple(slice(0, n) for n in shape)
    return jax.device_put(_read_block(reader, leaf, cfg, whole, dtype))
  blocks: dict[tuple, np.ndarray] = {}

  def callback(index):
    # Replicas share a block: read each distinct block from disk once.
    key = tuple(_bounds(index, shape))
    if key not in blocks:
      blocks[key] = _read_block(reader, leaf, cfg, index, dtype)
    return blocks[key]

  return jax.make_array_from_callback(shape, sharding, callback)


def _read_config(path: str) -> dict[str, Any]:
  cfg_file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_file):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {path}: expected the Hugging Face model config "
        "next to the weights (or pass config=ModelConfig(...)).")
  with open(cfg_file, encoding="utf-8") as fh:
    return json.load(fh)


# --------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------


def _check_params(params: Params, cfg: ModelConfig) -> None:
  """Same tree, shapes and dtype as ``param_shapes(cfg)``."""
  abstract = param_shapes(cfg)
  if jax.tree.structure(params) != jax.tree.structure(abstract):
    raise ValueError(
        "save_hf_checkpoint: params do not match cfg: expected the tree "
        f"{jax.tree.structure(abstract)}, got {jax.tree.structure(params)}.")
  want = jax.tree_util.tree_flatten_with_path(abstract)[0]
  for (p, a), x in zip(want, jax.tree.leaves(params)):
    name = "/".join(k.key for k in p)
    if tuple(x.shape) != a.shape:
      raise ValueError(f"save_hf_checkpoint: params {name} has shape "
                       f"{tuple(x.shape)}, expected {a.shape} from cfg.")
    if np.dtype(x.dtype) != np.dtype(a.dtype):
      raise ValueError(
          f"save_hf_checkpoint: params {name} has dtype {x.dtype} but "
          f"cfg.param_dtype is {cfg.param_dtype}; cast the params or "
          "cfg.replace(param_dtype=...).")


def _to_hf(leaf: _Leaf, x: np.ndarray) -> np.ndarray:
  """Inverse of the load layout for one layer (or unstacked leaf)."""
  view = x.transpose(np.argsort(leaf.perm))
  return np.ascontiguousarray(view.reshape(leaf.hf_shape))


def _export_tensors(params: Params, cfg: ModelConfig, model_type: str):
  """``[(name, shape, dtype, make)]`` in checkpoint order, lazily built."""
  out = []
  dtype = np.dtype(cfg.jnp_param_dtype)
  host: dict[tuple[str, ...], np.ndarray] = {}

  def fetch(leaf):
    if leaf.path not in host:
      host[leaf.path] = np.asarray(jax.device_get(_get(params, leaf.path)))
    return host[leaf.path]

  for leaf in _leaves(cfg):
    if leaf.layered:
      for i in range(cfg.num_layers):
        out.append((leaf.name.format(i=i), leaf.hf_shape, dtype,
                    lambda leaf=leaf, i=i: _to_hf(leaf, fetch(leaf)[i])))
    else:
      out.append((leaf.name, leaf.hf_shape, dtype,
                  lambda leaf=leaf: _to_hf(leaf, fetch(leaf))))
  if model_type == "llama" and cfg.qkv_bias:
    # Llama's attention_bias also puts a bias on o_proj; ours is zero.
    for i in range(cfg.num_layers):
      out.append((f"model.layers.{i}.self_attn.o_proj.bias", (cfg.d_model,),
                  dtype, lambda: np.zeros((cfg.d_model,), dtype)))
  return out, host


def save_hf_checkpoint(params: Params, cfg: ModelConfig,
                       path: str | os.PathLike, *, model_type: str = "qwen2",
                       max_shard_bytes: int | None = None) -> None:
  """Writes ``params`` as a Hugging Face Qwen2 / Llama checkpoint.

  The directory gets ``config.json`` (see :func:`config_to_hf`) and
  ``model.safetensors``, or, with ``max_shard_bytes``, shards
  ``model-0000i-of-0000n.safetensors`` of at most that many bytes each (a
  larger tensor gets a shard of its own) and ``model.safetensors.index.json``.
  Weight files of an earlier save in the directory are replaced. Tensors
  keep ``cfg.param_dtype``, so :func:`load_hf_checkpoint` gives the same
  bits back. Every parameter is gathered to this host, one at a time.

  Args:
    params: the parameter dict of ``cfg``.
    cfg: the model's config.
    path: the directory to write (created if needed).
    model_type: ``"qwen2"`` or ``"llama"``.
    max_shard_bytes: split the weights into shards of at most this size.

  Raises:
    ValueError: params that do not match ``cfg``, a config the model type
      cannot express, or a bad ``max_shard_bytes``.
  """
  st = _safetensors()
  hf = config_to_hf(cfg, model_type)
  _check_params(params, cfg)
  if max_shard_bytes is not None and (
      isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int)
      or max_shard_bytes < 1):
    raise ValueError(f"save_hf_checkpoint: max_shard_bytes must be a positive "
                     f"int or None, got {max_shard_bytes!r}.")
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  for fname in os.listdir(path):
    if fname in (WEIGHTS_FILE, INDEX_FILE) or _SHARD_FILE.match(fname):
      os.remove(os.path.join(path, fname))

  tensors, host = _export_tensors(params, cfg, model_type)
  shards: list[list[Any]] = [[]]
  size = 0
  for t in tensors:
    nbytes = math.prod(t[1]) * t[2].itemsize
    if (max_shard_bytes is not None and shards[-1]
        and size + nbytes > max_shard_bytes):
      shards.append([])
      size = 0
    shards[-1].append(t)
    size += nbytes
  n = len(shards)
  names = ([WEIGHTS_FILE] if max_shard_bytes is None else
           [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
  weight_map = {}
  for fname, shard in zip(names, shards):
    arrays = {name: make() for name, _, _, make in shard}
    st.numpy.save_file(arrays, os.path.join(path, fname),
                       metadata={"format": "pt"})
    weight_map.update({name: fname for name in arrays})
    host.clear()
  if max_shard_bytes is not None:
    total = sum(math.prod(t[1]) * t[2].itemsize for t in tensors)
    with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as fh:
      json.dump({"metadata": {"total_size": total},
                 "weight_map": weight_map}, fh, indent=2, sort_keys=True)
  with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as fh:
    json.dump(hf, fh, indent=2, sort_keys=True)
