"""Hugging Face checkpoints: parity with transformers, sharded load, export."""

import functools
import json
import os
import tempfile
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")

from absl.testing import absltest  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file
import torch
import transformers

from jaxrl_group import models as M
from jaxrl_group.models import hf

torch.set_num_threads(1)

SMALL = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, max_position_embeddings=256)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# name -> (model type, config keywords). head_dim 16 with theta 1e4 has
# wavelengths 6.3, 20, 63, 200, ...: with original length 64 the llama3 rule
# keeps the first, interpolates the next two and divides the rest.
MODELS = {
    "qwen2": ("qwen2", dict(rope_theta=50_000.0)),
    "qwen2_tied": ("qwen2", dict(tie_word_embeddings=True)),
    "llama3": ("llama", dict(rope_scaling=LLAMA3)),
    "llama_tied": ("llama", dict(tie_word_embeddings=True)),
}

_TMP = tempfile.TemporaryDirectory()   # pylint: disable=consider-using-with


def randomize(model, seed):
  """Random weights, norms around 1 and biases included (init zeroes them)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.1 * noise)
  return model


def build(model_type, seed=0, **kw):
  kw = {**SMALL, "attn_implementation": "eager", **kw}
  if model_type == "qwen2":
    config = transformers.Qwen2Config(**kw)
    model = transformers.Qwen2ForCausalLM(config)
  else:
    config = transformers.LlamaConfig(**kw)
    model = transformers.LlamaForCausalLM(config)
  return randomize(model, seed).eval()


@functools.cache
def checkpoint(name):
  """``(directory, torch model)`` of a saved random model, made once."""
  model_type, kw = MODELS[name]
  model = build(model_type, seed=len(name), **kw)
  path = os.path.join(_TMP.name, name)
  model.save_pretrained(path, safe_serialization=True)
  return path, model


def new_dir(name):
  path = os.path.join(_TMP.name, name)
  os.makedirs(path)
  return path


def batches(vocab, seed=0):
  """A full batch and a left-padded one (mask, HF-style explicit positions)."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, vocab, (2, 10)).astype(np.int32)
  lengths = np.array([10, 6])
  mask = np.arange(10)[None] >= (10 - lengths)[:, None]
  padded = np.where(mask, tokens, 0).astype(np.int32)
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0).astype(np.int32)
  return tokens, padded, mask, positions


def torch_logits(model, tokens, mask=None, positions=None):
  kw = {}
  if mask is not None:
    kw = dict(attention_mask=torch.tensor(mask.astype(np.int64)),
              position_ids=torch.tensor(positions.astype(np.int64)))
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens.astype(np.int64)),
                 **kw).logits.numpy()


@functools.partial(jax.jit, static_argnums=1)
def our_logits(params, cfg, tokens, padded, mask, positions):
  return (M.forward(params, cfg, tokens),
          M.forward(params, cfg, padded, mask_BxS=mask,
                    positions_BxS=positions))


class ParityTest(absltest.TestCase):

  def assert_parity(self, model, cfg, params):
    tokens, padded, mask, positions = batches(cfg.vocab_size)
    full, left = our_logits(params, cfg, tokens, padded, mask, positions)
    np.testing.assert_allclose(full, torch_logits(model, tokens), atol=1e-4)
    want = torch_logits(model, padded, mask, positions)
    # Padding positions are never used; compare the real tokens only.
    np.testing.assert_allclose(np.asarray(left)[mask], want[mask], atol=1e-4)
    self.assertGreater(np.abs(want).max(), 0.5)   # not trivially small

  def test_logits_match_transformers(self):
    for name in MODELS:
      with self.subTest(name):
        path, model = checkpoint(name)
        cfg, params = M.load_hf_checkpoint(path)
        self.assertEqual(cfg.tie_embeddings, "tied" in name)
        self.assertEqual("lm_head" in params, "tied" not in name)
        self.assertEqual(cfg.qkv_bias, name.startswith("qwen2"))
        self.assert_parity(model, cfg, params)

  def test_config_fields(self):
    cfg, _ = M.load_hf_checkpoint(checkpoint("qwen2")[0])
    self.assertEqual(
        (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads,
         cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim, cfg.rope_theta,
         cfg.max_seq_len, cfg.param_dtype),
        (256, 64, 2, 4, 2, 16, 128, 50_000.0, 256, "float32"))
    cfg, params = M.load_hf_checkpoint(checkpoint("llama3")[0])
    self.assertEqual((cfg.rope_scaling, cfg.rope_factor,
                      cfg.rope_original_max_len), ("llama3", 8.0, 64))
    self.assertEqual(params["layers"]["wq"].shape, (2, 64, 4, 16))
    self.assertEqual(params["layers"]["wo"].shape, (2, 4, 16, 64))
    self.assertEqual(params["lm_head"].shape, (64, 256))

  def test_layout_of_one_layer(self):
    path, model = checkpoint("qwen2")
    _, params = M.load_hf_checkpoint(path)
    attn = model.model.layers[1].self_attn
    q = attn.q_proj.weight.detach().numpy()            # [H * Dh, D]
    np.testing.assert_array_equal(
        params["layers"]["wq"][1], q.reshape(4, 16, 64).transpose(2, 0, 1))
    np.testing.assert_array_equal(
        params["layers"]["bk"][1],
        attn.k_proj.bias.detach().numpy().reshape(2, 16))
    o = attn.o_proj.weight.detach().numpy()            # [D, H * Dh]
    np.testing.assert_array_equal(
        params["layers"]["wo"][1], o.reshape(64, 4, 16).transpose(1, 2, 0))
    np.testing.assert_array_equal(
        params["layers"]["w_down"][0],
        model.model.layers[0].mlp.down_proj.weight.detach().numpy().T)

  def test_llama_attention_bias(self):
    model = build("llama", seed=7, attention_bias=True)
    with torch.no_grad():
      for layer in model.model.layers:
        layer.self_attn.o_proj.bias.zero_()
    path = new_dir("llama_bias")
    model.save_pretrained(path)
    cfg, params = M.load_hf_checkpoint(path)
    self.assertTrue(cfg.qkv_bias)
    self.assert_parity(model, cfg, params)
    # A real output-projection bias cannot be represented: refuse it.
    with torch.no_grad():
      model.model.layers[1].self_attn.o_proj.bias[3] = 0.5
    path = new_dir("llama_obias")
    model.save_pretrained(path)
    with self.assertRaisesRegex(ValueError,
                                r"model\.layers\.1\.self_attn\.o_proj\.bias"):
      M.load_hf_checkpoint(path)

  def test_bfloat16_checkpoint_keeps_its_bits(self):
    model = build("qwen2", seed=3).to(torch.bfloat16)
    path = new_dir("qwen2_bf16")
    model.save_pretrained(path)
    cfg, params = M.load_hf_checkpoint(path, dtype="auto")
    self.assertEqual(cfg.param_dtype, "bfloat16")
    self.assertEqual(params["layers"]["w_up"].dtype, jnp.bfloat16)
    attn = model.model.layers[0].self_attn
    want = attn.q_proj.bias.detach().view(torch.int16).numpy()
    np.testing.assert_array_equal(
        np.asarray(params["layers"]["bq"][0]).view(np.int16).reshape(-1),
        want)
    want = model.lm_head.weight.detach().view(torch.int16).numpy()
    np.testing.assert_array_equal(
        np.asarray(params["lm_head"]).view(np.int16), want.T)

  def test_hf_sharded_checkpoint_with_index(self):
    _, model = checkpoint("llama3")
    path = new_dir("hf_shards")
    model.save_pretrained(path, max_shard_size="60KB")
    self.assertTrue(os.path.isfile(os.path.join(path, hf.INDEX_FILE)))
    self.assertGreater(
        sum(f.endswith(".safetensors") for f in os.listdir(path)), 2)
    _, want = M.load_hf_checkpoint(checkpoint("llama3")[0])
    _, got = M.load_hf_checkpoint(path)
    jax.tree.map(np.testing.assert_array_equal, got, want)


class ShardedLoadTest(absltest.TestCase):

  def test_shardings_place_each_slice(self):
    path, _ = checkpoint("qwen2")
    cfg, want = M.load_hf_checkpoint(path)
    axes = M.param_axes(cfg)
    is_axes = lambda x: isinstance(x, tuple)
    auto = jax.sharding.AxisType.Auto
    # FSDP over all 8 devices on the embedding dimension; then a 3-axis mesh
    # that also splits heads, vocab and MLP (tensor) and head_dim, so that
    # reads cut the fused [H * Dh] rows of the checkpoint.
    fsdp_mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))
    mesh3 = jax.make_mesh((2, 2, 2), ("fsdp", "tensor", "x"),
                          axis_types=(auto,) * 3)
    rules3 = {"embed": "fsdp", "heads": "tensor", "kv_heads": "tensor",
              "vocab": "tensor", "mlp": "tensor", "head_dim": "x"}
    cases = [(fsdp_mesh, {"embed": "fsdp"}), (mesh3, rules3)]
    for mesh, rules in cases:
      shardings = jax.tree.map(
          lambda a, m=mesh, r=rules: NamedSharding(
              m, P(*(r.get(n) for n in a))), axes, is_leaf=is_axes)
      reads = []
      reader_cls = hf._Reader   # pylint: disable=protected-access
      block = reader_cls.block

      def spy(reader, name, index, block=block, reads=reads):
        out = block(reader, name, index)
        reads.append((name, out.shape))
        return out

      with mock.patch.object(reader_cls, "block", spy):
        _, got = M.load_hf_checkpoint(path, shardings=shardings)
      for g, w, s in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                         jax.tree.leaves(shardings)):
        self.assertEqual(g.sharding, s)
        np.testing.assert_array_equal(g, w)
        for shard in g.addressable_shards:
          self.assertEqual(shard.data.shape, s.shard_shape(w.shape))
      # No read is of a whole tensor: each device's block is read alone.
      embed_reads = [s for n, s in reads if n == "model.embed_tokens.weight"]
      if mesh is fsdp_mesh:
        self.assertEqual(set(embed_reads), {(256, 8)})
        self.assertLen(embed_reads, 8)
      else:
        self.assertEqual(set(embed_reads), {(128, 32)})
        self.assertLen(embed_reads, 4)   # replicas over "x" read it once
        q_reads = {s for n, s in reads if n.endswith("q_proj.weight")}
        self.assertEqual(q_reads, {(2 * 16, 32)})   # 2 heads, half of D
    self.assertEqual(got["layers"]["wq"].sharding.spec,
                     P(None, "fsdp", "tensor", "x"))

  def test_bad_shardings(self):
    path, _ = checkpoint("qwen2")
    with self.assertRaisesRegex(ValueError, "shardings must have the "
                                "structure"):
      M.load_hf_checkpoint(path, shardings={"embed": None})


class ExportTest(absltest.TestCase):

  def test_round_trip_is_bit_exact(self):
    cfg, params = M.load_hf_checkpoint(checkpoint("qwen2")[0])
    for dtype in ("float32", "bfloat16"):
      c = cfg.replace(param_dtype=dtype)
      p = jax.tree.map(lambda x, d=c.jnp_param_dtype: x.astype(d), params)
      path = new_dir(f"export_{dtype}")
      M.save_hf_checkpoint(p, c, path, model_type="qwen2")
      with open(os.path.join(path, hf.CONFIG_FILE)) as fh:
        self.assertEqual(json.load(fh)["dtype"], dtype)
      got_cfg, got = M.load_hf_checkpoint(path, dtype="auto")
      self.assertEqual(got_cfg, c)
      for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
        self.assertEqual(g.dtype, w.dtype)
        np.testing.assert_array_equal(
            np.asarray(g).view(np.uint8), np.asarray(w).view(np.uint8))
      # The default loads float32; bfloat16 widens exactly.
      cfg32, got32 = M.load_hf_checkpoint(path)
      self.assertEqual(cfg32.param_dtype, "float32")
      np.testing.assert_array_equal(
          got32["embed"], np.asarray(p["embed"]).astype(np.float32))
    self.assertEqual(load_file(os.path.join(path, hf.WEIGHTS_FILE))[
        "lm_head.weight"].dtype, jnp.bfloat16)

  def test_transformers_loads_our_export(self):
    rng = np.random.RandomState(0)
    base = M.ModelConfig(vocab_size=256, d_model=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
                         max_seq_len=256)
    cases = [
        ("qwen2", base.replace(qkv_bias=True, rope_theta=20_000.0)),
        ("llama", base.replace(tie_embeddings=True, rope_scaling="llama3",
                               rope_original_max_len=64)),
        ("llama", base.replace(qkv_bias=True)),
    ]
    for n, (model_type, cfg) in enumerate(cases):
      with self.subTest(f"{model_type} {n}"):
        params = jax.tree.map(
            lambda s: jnp.asarray(0.1 * rng.randn(*s.shape), jnp.float32),
            M.param_shapes(cfg))
        path = new_dir(f"to_torch_{n}")
        # Sharded on the first case, one file on the others.
        M.save_hf_checkpoint(params, cfg, path, model_type=model_type,
                             max_shard_bytes=40_000 if n == 0 else None)
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            path, output_loading_info=True, attn_implementation="eager")
        self.assertEqual(type(model).__name__,
                         hf.ARCHITECTURES[model_type])
        self.assertEqual((info["missing_keys"], info["unexpected_keys"],
                          info["mismatched_keys"]), (set(), set(), set()))
        tokens, padded, mask, positions = batches(256, seed=n)
        full, left = our_logits(params, cfg, tokens, padded, mask, positions)
        np.testing.assert_allclose(full, torch_logits(model, tokens),
                                   atol=1e-4)
        want = torch_logits(model.eval(), padded, mask, positions)
        np.testing.assert_allclose(np.asarray(left)[mask], want[mask],
                                   atol=1e-4)
        back_cfg, back = M.load_hf_checkpoint(path)
        self.assertEqual(back_cfg, cfg)
        jax.tree.map(np.testing.assert_array_equal, back, params)
    files = sorted(os.listdir(os.path.join(_TMP.name, "to_torch_0")))
    self.assertIn(hf.INDEX_FILE, files)
    self.assertNotIn(hf.WEIGHTS_FILE, files)
    shards = [f for f in files if f.endswith(".safetensors")]
    self.assertGreater(len(shards), 2)
    for i, f in enumerate(shards):
      self.assertEqual(f, f"model-{i + 1:05d}-of-{len(shards):05d}"
                       ".safetensors")
      # Each shard holds at most 40 kB, or a single larger tensor.
      size = os.path.getsize(os.path.join(_TMP.name, "to_torch_0", f))
      n = len(load_file(os.path.join(_TMP.name, "to_torch_0", f)))
      self.assertTrue(size < 40_000 + 4096 or n == 1, (f, size, n))

  def test_resave_replaces_old_weight_files(self):
    cfg, params = M.load_hf_checkpoint(checkpoint("llama_tied")[0])
    path = new_dir("resave")
    M.save_hf_checkpoint(params, cfg, path, model_type="llama",
                         max_shard_bytes=30_000)
    M.save_hf_checkpoint(params, cfg, path, model_type="llama")
    self.assertEqual(sorted(os.listdir(path)),
                     [hf.CONFIG_FILE, hf.WEIGHTS_FILE])

  def test_export_errors(self):
    cfg = M.get_model_config("tiny", qkv_bias=False)
    params = M.param_shapes(cfg)
    with self.assertRaisesRegex(ValueError, "Qwen2 always has q/k/v biases"):
      M.save_hf_checkpoint(params, cfg, new_dir("bad1"), model_type="qwen2")
    with self.assertRaisesRegex(ValueError, "model_type must be one of"):
      M.save_hf_checkpoint(params, cfg, new_dir("bad2"), model_type="gpt2")
    with self.assertRaisesRegex(ValueError, "params layers/wo has shape"):
      M.save_hf_checkpoint(params, cfg.replace(num_heads=2, num_kv_heads=2),
                           new_dir("bad3"), model_type="llama")
    with self.assertRaisesRegex(ValueError, "cfg.param_dtype is bfloat16"):
      M.save_hf_checkpoint(params, cfg.replace(param_dtype="bfloat16"),
                           new_dir("bad4"), model_type="llama")


class ConfigTest(absltest.TestCase):

  def test_legacy_and_new_rope_keys(self):
    legacy = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 64, "rope_theta": 500_000.0,
              "rope_scaling": {"type": "llama3", "factor": 32.0,
                               "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192},
              "torch_dtype": "bfloat16", "max_position_embeddings": 4096}
    cfg = M.config_from_hf(legacy, param_dtype="auto", remat=True)
    self.assertEqual(
        (cfg.rope_theta, cfg.rope_scaling, cfg.rope_factor, cfg.num_kv_heads,
         cfg.head_dim, cfg.param_dtype, cfg.remat, cfg.qkv_bias,
         cfg.tie_embeddings, cfg.norm_eps),
        (500_000.0, "llama3", 32.0, 4, 8, "bfloat16", "full", False, False,
         1e-6))
    new = {k: v for k, v in legacy.items()
           if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {"rope_type": "llama3",
                              "rope_theta": 500_000.0, "factor": 32.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    got = M.config_from_hf(new, param_dtype="auto", remat=True)
    # original_max_position_embeddings defaults to max_position_embeddings.
    self.assertEqual(got, cfg.replace(rope_original_max_len=4096))
    self.assertEqual(M.config_from_hf(new).param_dtype, "float32")

  def test_to_hf_and_back(self):
    for model_type, cfg in [
        ("qwen2", M.get_model_config("qwen2.5-0.5b")),
        ("llama", M.get_model_config("llama-3.2-1b")),
        ("llama", M.get_model_config("bench-tiny", qkv_bias=False))]:
      hf_json = M.config_to_hf(cfg, model_type)
      self.assertEqual(M.config_from_hf(json.loads(json.dumps(hf_json))),
                       cfg)
    self.assertEqual(hf_json["architectures"], ["LlamaForCausalLM"])
    self.assertEqual(hf_json["rope_parameters"],
                     {"rope_type": "default", "rope_theta": 10_000.0})
    # transformers reads it back to the same numbers.
    tf_cfg = transformers.LlamaConfig.from_dict(hf_json)
    self.assertEqual((tf_cfg.head_dim, tf_cfg.num_key_value_heads,
                      tf_cfg.rope_parameters["rope_theta"]), (64, 2, 1e4))

  def test_unsupported_configs(self):
    good = M.config_to_hf(M.get_model_config("tiny"), "qwen2")
    cases = [
        (dict(model_type="mistral"), "model_type 'mistral'"),
        (dict(model_type=None), "model_type None"),
        (dict(architectures=["Qwen2ForSequenceClassification"]),
         "architectures"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0},
              rope_scaling=None), "rope_type 'yarn'"),
        (dict(rope_scaling={"type": "dynamic", "factor": 2.0}),
         "rope_type 'dynamic'"),
        (dict(use_sliding_window=True, sliding_window=4096,
              max_window_layers=0), "sliding_window 4096"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
        (dict(hidden_size=None), "hidden_size"),
        (dict(rope_parameters={"rope_type": "default",
                               "partial_rotary_factor": 0.5},
              rope_scaling=None), "partial_rotary_factor"),
    ]
    for change, message in cases:
      with self.subTest(message):
        with self.assertRaisesRegex(ValueError, message):
          M.config_from_hf({**good, **change})
    # A sliding window switched off, or on for no layer, is fine.
    M.config_from_hf({**good, "use_sliding_window": False,
                      "sliding_window": 4096, "max_window_layers": 0})
    M.config_from_hf({**good, "use_sliding_window": True,
                      "sliding_window": 4096, "max_window_layers": 2})
    with self.assertRaisesRegex(ValueError, r"unknown ModelConfig field.*"
                                "depth"):
      M.config_from_hf(good, depth=2)
    with self.assertRaisesRegex(ValueError, "no dtype"):
      M.config_from_hf({k: v for k, v in good.items() if k != "dtype"},
                       param_dtype="auto")


class LoadErrorTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.src = checkpoint("llama_tied")[0]
    cls.tensors = load_file(os.path.join(cls.src, hf.WEIGHTS_FILE))
    with open(os.path.join(cls.src, hf.CONFIG_FILE)) as fh:
      cls.config = json.load(fh)

  def write(self, name, tensors=None, config=True):
    path = new_dir(name)
    if config:
      with open(os.path.join(path, hf.CONFIG_FILE), "w") as fh:
        json.dump(self.config, fh)
    if tensors is not None:
      save_file(tensors, os.path.join(path, hf.WEIGHTS_FILE),
                metadata={"format": "pt"})
    return path

  def test_missing_files(self):
    missing = os.path.join(_TMP.name, "does_not_exist")
    with self.assertRaisesRegex(FileNotFoundError, "does_not_exist"):
      M.load_hf_checkpoint(missing)
    path = self.write("no_config", self.tensors, config=False)
    with self.assertRaisesRegex(FileNotFoundError, "No config.json in"):
      M.load_hf_checkpoint(path)
    path = self.write("no_weights")
    with self.assertRaisesRegex(FileNotFoundError,
                                "expected model.safetensors or "
                                "model.safetensors.index.json"):
      M.load_hf_checkpoint(path)
    path = self.write("lost_shard")
    with open(os.path.join(path, hf.INDEX_FILE), "w") as fh:
      json.dump({"weight_map": {
          "model.embed_tokens.weight": "model-00001-of-00002.safetensors"}},
                fh)
    with self.assertRaisesRegex(FileNotFoundError,
                                "model-00001-of-00002.safetensors"):
      M.load_hf_checkpoint(path)

  def test_bad_tensors(self):
    name = "model.layers.1.self_attn.k_proj.weight"
    wrong = dict(self.tensors)
    wrong[name] = np.zeros((16, 64), np.float32)
    with self.assertRaisesRegex(
        ValueError, rf"{name}.*shape \[16, 64\], expected \[32, 64\]"):
      M.load_hf_checkpoint(self.write("wrong_shape", wrong))
    missing = {k: v for k, v in self.tensors.items()
               if k != "model.layers.0.mlp.up_proj.weight"}
    with self.assertRaisesRegex(ValueError, "missing tensor "
                                "'model.layers.0.mlp.up_proj.weight'"):
      M.load_hf_checkpoint(self.write("missing_tensor", missing))
    extra = dict(self.tensors)
    extra["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(
        8, np.float32)
    M.load_hf_checkpoint(self.write("inv_freq", extra))   # ignored
    extra["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)
    with self.assertRaisesRegex(ValueError, r"does not use: \['model.layers"
                                r"\.0\.self_attn\.q_norm\.weight'\]"):
      M.load_hf_checkpoint(self.write("extra_tensor", extra))
    untied = dict(self.tensors)
    untied["lm_head.weight"] = untied["model.embed_tokens.weight"] + 1
    with self.assertRaisesRegex(ValueError, "'lm_head.weight' differs"):
      M.load_hf_checkpoint(self.write("untied", untied))
    # Loading it untied works and keeps the separate head.
    cfg, params = M.load_hf_checkpoint(
        self.write("untied_ok", untied), config={"tie_embeddings": False})
    self.assertFalse(cfg.tie_embeddings)
    np.testing.assert_array_equal(params["lm_head"],
                                  untied["lm_head.weight"].T)

  def test_config_argument(self):
    cfg, _ = M.load_hf_checkpoint(self.src)
    # A ModelConfig replaces config.json, which then need not exist.
    path = self.write("cfg_only", self.tensors, config=False)
    got_cfg, got = M.load_hf_checkpoint(path, config=cfg.replace(remat=True),
                                        dtype=jnp.bfloat16)
    self.assertEqual(got_cfg, cfg.replace(remat=True, param_dtype="bfloat16"))
    self.assertEqual(got["embed"].dtype, jnp.bfloat16)
    with self.assertRaisesRegex(ValueError, "dtype must be one of"):
      M.load_hf_checkpoint(path, config=cfg, dtype="int8")
    with self.assertRaisesRegex(ValueError, "shape"):
      M.load_hf_checkpoint(path, config=cfg.replace(mlp_dim=64))


if __name__ == "__main__":
  absltest.main()
