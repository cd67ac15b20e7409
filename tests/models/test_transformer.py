"""The decoder: cached passes against a full forward, RoPE, NNX, sharding."""

import functools
import math

from absl.testing import absltest
from flax import nnx
import jax
import jax.extend
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxrl_group import models as M
from jaxrl_group.models import _layers

# Small but with every feature: GQA (4 heads, 2 kv heads), q/k/v biases.
CFG = M.ModelConfig(vocab_size=48, d_model=32, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, mlp_dim=64, rope_theta=500.0,
                    qkv_bias=True, max_seq_len=64)


def key(seed=0):
  # The rbg generator compiles much faster than threefry on CPU.
  return jax.random.key(seed, impl="rbg")


init = jax.jit(M.init_params, static_argnums=0)


def random_params(cfg, seed=0):
  """Random weights with non-trivial norms and biases (init has 1 and 0)."""
  rng = np.random.RandomState(seed)

  def make(path, s):
    name = jax.tree_util.keystr(path)
    x = 0.1 * rng.randn(*s.shape)
    return jnp.asarray(x + 1.0 if "norm" in name else x, s.dtype)

  return jax.tree_util.tree_map_with_path(make, M.param_shapes(cfg))


@functools.partial(jax.jit, static_argnums=1,
                   static_argnames=("return_hidden",))
def forward(params, cfg, tokens, mask=None, return_hidden=False):
  return M.forward(params, cfg, tokens, mask_BxS=mask,
                   return_hidden=return_hidden)


prefill = jax.jit(M.prefill, static_argnums=1)
extend = jax.jit(M.extend, static_argnums=1)


def rollout(cfg, seed=0, b=3, g=2, p=6, t=5, lengths=(6, 3, 1)):
  """Left-padded prompts of the given lengths and G continuations each."""
  rng = np.random.RandomState(seed)
  lengths = np.asarray(lengths, np.int32)
  prompts = rng.randint(0, cfg.vocab_size, (b, p)).astype(np.int32)
  prompts[np.arange(p)[None] < (p - lengths)[:, None]] = 0   # padding id
  tokens = rng.randint(0, cfg.vocab_size, (b, g, t)).astype(np.int32)
  return prompts, lengths, tokens


def full_sequences(prompts, lengths, tokens):
  """Each sample as one left-padded sequence ``[B * G, P + T]`` and its mask."""
  b, g, t = tokens.shape
  p = prompts.shape[1]
  seq = np.concatenate(
      [np.repeat(prompts[:, None], g, axis=1), tokens], axis=-1)
  mask = np.arange(p + t)[None] >= (p - lengths)[:, None]
  mask = np.repeat(mask[:, None], g, axis=1)
  return seq.reshape(b * g, p + t), mask.reshape(b * g, p + t)


def count_scans(jaxpr):
  """``[length]`` of every scan in a (closed) jaxpr, nested ones included."""
  lengths = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      lengths.append(eqn.params["length"])
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      lengths.extend(count_scans(sub))
  return lengths


def count_eqns(jaxpr):
  n = len(jaxpr.eqns)
  for eqn in jaxpr.eqns:
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      n += count_eqns(sub)
  return n


class ParamsTest(absltest.TestCase):

  def test_bench_tiny_param_counts(self):
    cfg = M.get_model_config("bench-tiny")

    def count(c):
      return sum(math.prod(x.shape)
                 for x in jax.tree.leaves(M.param_shapes(c)))

    self.assertEqual(cfg.num_params(), 3_969_280)
    self.assertEqual(count(cfg), 3_969_280)
    no_bias = cfg.replace(qkv_bias=False)
    self.assertEqual(no_bias.num_params(), 3_967_232)
    self.assertEqual(count(no_bias), 3_967_232)
    # Hand count: embed + lm_head 2 * 64 * 256, final norm 256, and per
    # layer 2 norms, q (256x256), k, v (256x128 each), o (256x256), three
    # 256x1024 MLP matrices, and biases 256 + 2 * 128.
    per_layer = 2 * 256 + 256 * 512 + 256 * 256 + 3 * 256 * 1024 + 512
    self.assertEqual(2 * 64 * 256 + 256 + 4 * per_layer, 3_969_280)

  def test_shapes_and_axes_agree(self):
    shapes = M.param_shapes(CFG)
    axes = M.param_axes(CFG)
    for s, a in zip(jax.tree.leaves(shapes),
                    jax.tree.leaves(axes, is_leaf=lambda x: isinstance(
                        x, tuple))):
      self.assertLen(a, len(s.shape))
    self.assertEqual(shapes["layers"]["wq"].shape, (2, 32, 4, 8))
    self.assertEqual(shapes["layers"]["bk"].shape, (2, 2, 8))
    self.assertEqual(shapes["lm_head"].shape, (32, 48))

  def test_init_values(self):
    params = init(CFG, key())
    np.testing.assert_array_equal(params["final_norm"], np.ones(32))
    np.testing.assert_array_equal(params["layers"]["bq"], np.zeros((2, 4, 8)))
    std = float(np.std(np.asarray(params["layers"]["w_gate"])))
    self.assertAlmostEqual(std, CFG.init_std, delta=0.002)


class CachedPassesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = random_params(CFG)
    cls.prompts, cls.lengths, cls.tokens = rollout(CFG)
    seq, mask = full_sequences(cls.prompts, cls.lengths, cls.tokens)
    cls.full = np.asarray(forward(cls.params, CFG, seq, mask)).reshape(
        3, 2, 11, CFG.vocab_size)

  def test_prefill_and_extend_equal_forward(self):
    logits, cache = prefill(self.params, CFG, self.prompts, self.lengths)
    ext = extend(self.params, CFG, cache, self.tokens)
    p = self.prompts.shape[1]
    # The last prompt position predicts the first completion token.
    for g in range(2):
      np.testing.assert_allclose(logits, self.full[:, g, p - 1], atol=1e-5)
    np.testing.assert_allclose(ext, self.full[:, :, p:], atol=1e-5)
    self.assertEqual(ext.dtype, jnp.float32)
    np.testing.assert_array_equal(cache.lengths_B, self.lengths)
    np.testing.assert_array_equal(
        cache.mask_BxP, np.arange(p)[None] >= (p - self.lengths)[:, None])

  def test_decode_steps_equal_extend(self):
    _, cache = prefill(self.params, CFG, self.prompts, self.lengths)
    for layout in ("unrolled", "scan"):
      cfg = CFG.replace(decode_layers=layout)
      dp = M.decode_params(self.params, cfg)
      dc = M.init_decode_cache(cfg, cache, 2, 5)
      step_fn = jax.jit(lambda d, c, x, s, cfg=cfg: M.decode_step(
          d, cfg, c, x, s))
      for step in range(5):
        logits, dc = step_fn(dp, dc, self.tokens[:, :, step], step)
        np.testing.assert_allclose(logits, self.full[:, :, 6 + step],
                                   atol=1e-5, err_msg=f"{layout} {step}")
      # Transposed keys, one slot per fed token, each written (the logits
      # above check what the slots hold).
      kt = dc.kt_BxGxKxDhxT
      kt = np.stack(kt) if layout == "unrolled" else np.asarray(kt)
      self.assertEqual(kt.shape, (2, 3, 2, 2, 8, 5))
      self.assertFalse(np.any(np.all(kt == 0, axis=-2)), "unwritten slot")

  def test_bfloat16_decode_close_to_float32(self):
    bf16 = CFG.replace(dtype="bfloat16", param_dtype="bfloat16")
    bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), self.params)

    @jax.jit
    def three_steps(params):
      _, cache = M.prefill(params, bf16, self.prompts, self.lengths)
      dp, dc = M.decode_params(params, bf16), M.init_decode_cache(
          bf16, cache, 2, 5)
      out = []
      for step in range(3):
        logits, dc = M.decode_step(dp, bf16, dc, self.tokens[:, :, step],
                                   step)
        out.append(logits)
      return jnp.stack(out, axis=2), dc.kt_BxGxKxDhxT[0]

    got, cache = three_steps(bf16_params)
    self.assertEqual(got.dtype, jnp.float32)
    self.assertEqual(cache.dtype, jnp.bfloat16)
    want = self.full[:, :, 6:9]
    err = np.abs(np.asarray(got) - want).max()
    self.assertLess(err, 0.05 * np.abs(want).max())
    self.assertGreater(err, 0.0)   # bf16 really was used

  def test_decode_layouts_agree_and_mismatch_raises(self):
    _, cache = prefill(self.params, CFG, self.prompts, self.lengths)
    scan_cfg = CFG.replace(decode_layers="scan")
    out = {}
    for cfg in (CFG, scan_cfg):
      dp = M.decode_params(self.params, cfg)
      dc = M.init_decode_cache(cfg, cache, 2, 5)
      out[cfg.decode_layers] = jax.jit(
          lambda d, c, cfg=cfg: M.decode_step(
              d, cfg, c, self.tokens[:, :, 0], 0))(dp, dc)
    np.testing.assert_allclose(out["unrolled"][0], out["scan"][0],
                               atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 list(out["unrolled"][1].kt_BxGxKxDhxT),
                 list(out["scan"][1].kt_BxGxKxDhxT))
    with self.assertRaisesRegex(ValueError, "decode_layers='scan'"):
      M.decode_step(M.decode_params(self.params, CFG), scan_cfg,
                    M.init_decode_cache(scan_cfg, cache, 2, 5),
                    self.tokens[:, :, 0], 0)
    with self.assertRaisesRegex(ValueError, "decode_layers must be one of"):
      CFG.replace(decode_layers="loop")

  def test_decode_attention_equals_attention(self):
    # One query per sample at own position `step`, against the general
    # attention with the same keys (head-major, not transposed). Cases:
    # grouped queries (H = 2K), one query per kv head, and a prefix as long
    # as the own slots (P == T, shapes XLA could mistake for one another).
    for b, g, h, k, t, p, dh, step in ((2, 3, 4, 2, 6, 5, 8, 3),
                                       (2, 3, 2, 2, 5, 5, 8, 4),
                                       (1, 4, 6, 2, 4, 4, 8, 0)):
      with self.subTest(h=h, k=k, t=t, p=p, step=step):
        rng = np.random.RandomState(3)
        q = rng.randn(b, g, 1, h, dh).astype(np.float32)
        own_k = rng.randn(b, g, k, t, dh).astype(np.float32)
        own_v = rng.randn(b, g, k, t, dh).astype(np.float32)
        pre_k = rng.randn(b, k, p, dh).astype(np.float32)
        pre_v = rng.randn(b, k, p, dh).astype(np.float32)
        pmask = np.arange(p)[None] >= np.array([[2], [0]])[:b]
        want = _layers.attention(
            q, own_k, own_v, (np.arange(t) <= step)[None, None, None],
            prefix_k_BxKxPxDh=pre_k, prefix_v_BxKxPxDh=pre_v,
            prefix_mask_BxP=pmask)[:, :, 0]
        # Positions after `step` hold (finite) values that must not be read.
        own_k[..., step + 1:, :] = 1e3
        own_v[..., step + 1:, :] = 1e6
        got = jax.jit(M.decode_attention)(
            q[:, :, 0], np.swapaxes(own_k, -1, -2), own_v, jnp.int32(step),
            prefix_kt_BxKxDhxP=np.swapaxes(pre_k, -1, -2),
            prefix_v_BxKxPxDh=pre_v, prefix_mask_BxP=pmask)
        np.testing.assert_allclose(got, want, atol=1e-5)

  def test_default_positions_skip_left_padding(self):
    # Left padding must not shift positions: a padded sequence gives the
    # same logits on its real tokens as the unpadded one.
    seq = np.array([[5, 7, 9, 11]], np.int32)
    padded = np.array([[0, 0, 5, 7, 9, 11]], np.int32)
    mask = np.array([[False, False, True, True, True, True]])
    a, b = jax.jit(lambda p: (M.forward(p, CFG, seq),
                              M.forward(p, CFG, padded, mask_BxS=mask)))(
                                  self.params)
    np.testing.assert_allclose(a, b[:, 2:], atol=1e-5)


class ModuleTest(absltest.TestCase):

  def test_nnx_module_matches_forward_and_names_axes(self):
    params = random_params(CFG)
    model = M.Transformer(CFG, params=params)
    tokens = np.arange(14, dtype=np.int32).reshape(2, 7)
    logits = nnx.jit(lambda m, t: m(t))(model, tokens)
    np.testing.assert_allclose(logits, forward(params, CFG, tokens),
                               atol=1e-6)
    axes = M.param_axes(CFG)
    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    self.assertLen(flat, len(jax.tree.leaves(params)))
    for path, var in flat:
      keys = tuple(k.key for k in path)
      want = axes
      for k in keys:
        want = want[k]
      # flax 0.12 keeps the logical names in the out_sharding metadata.
      self.assertEqual(tuple(var.get_metadata()["out_sharding"]), want,
                       keys)
    got = model.param_dict()
    jax.tree.map(np.testing.assert_array_equal, got, params)

  def test_nnx_random_init_and_errors(self):
    model = nnx.eval_shape(lambda: M.Transformer(CFG, rngs=nnx.Rngs(0)))
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), model.param_dict())
    self.assertEqual(shapes, jax.tree.map(lambda x: (x.shape, x.dtype),
                                          M.param_shapes(CFG)))
    with self.assertRaisesRegex(ValueError, "exactly one of rngs"):
      M.Transformer(CFG)
    params = dict(init(CFG, key()))
    params["extra"] = params["final_norm"]
    with self.assertRaisesRegex(ValueError, "'extra'"):
      M.Transformer(CFG, params=params)


class VariantsTest(absltest.TestCase):

  def test_tied_embeddings(self):
    cfg = CFG.replace(tie_embeddings=True)
    params = random_params(cfg)
    self.assertNotIn("lm_head", params)
    self.assertEqual(cfg.num_params(), CFG.num_params() - 32 * 48)
    tokens = np.array([[1, 2, 3, 4]], np.int32)
    h, logits, unembedded = jax.jit(lambda p: (
        M.forward(p, cfg, tokens, return_hidden=True),
        M.forward(p, cfg, tokens),
        M.unembed(p, cfg, M.forward(p, cfg, tokens, return_hidden=True))))(
            params)
    np.testing.assert_allclose(unembedded, logits, atol=1e-6)
    h = np.asarray(h, np.float64)
    scale = np.asarray(params["final_norm"], np.float64)
    normed = h / np.sqrt(np.mean(h * h, -1, keepdims=True) + cfg.norm_eps)
    want = (normed * scale) @ np.asarray(params["embed"], np.float64).T
    np.testing.assert_allclose(logits, want, atol=1e-5)

  def test_bfloat16_close_to_float32(self):
    params = random_params(CFG)
    tokens = rollout(CFG)[2].reshape(6, 5)
    bf16 = CFG.replace(dtype="bfloat16")
    bf16_params = bf16.replace(param_dtype="bfloat16")
    f32, *outs = jax.jit(lambda p: (
        M.forward(p, CFG, tokens), M.forward(p, bf16, tokens),
        M.forward(jax.tree.map(lambda x: x.astype(jnp.bfloat16), p),
                  bf16_params, tokens)))(params)
    f32 = np.asarray(f32)
    for out in outs:
      self.assertEqual(out.dtype, jnp.float32)
      out = np.asarray(out)
      self.assertTrue(np.isfinite(out).all())
      err = np.abs(out - f32).max()
      self.assertLess(err, 0.05 * np.abs(f32).max())
      self.assertGreater(err, 0.0)   # bf16 really was used

  def test_remat_same_values_and_gradients(self):
    params = random_params(CFG)
    tokens = rollout(CFG)[2].reshape(6, 5)
    w = np.random.RandomState(3).randn(6, 5, 48).astype(np.float32)

    def loss(p, cfg):
      return jnp.sum(M.forward(p, cfg, tokens) * w)

    plain = jax.jit(lambda p: jax.value_and_grad(loss)(
        p, CFG.replace(remat="none")))(params)
    for policy in ("matmuls", "full"):
      remat = jax.jit(lambda p, policy=policy: jax.value_and_grad(loss)(
          p, CFG.replace(remat=policy)))(params)
      np.testing.assert_allclose(remat[0], plain[0], atol=1e-4,
                                 err_msg=policy)
      jax.tree.map(lambda a, b, policy=policy: np.testing.assert_allclose(
          a, b, rtol=1e-5, atol=1e-5, err_msg=policy), remat[1], plain[1])
    # The gradient is not trivially zero.
    self.assertGreater(float(jnp.abs(plain[1]["layers"]["wq"]).max()), 1e-3)


class RopeTest(absltest.TestCase):

  def test_llama3_inverse_frequencies_by_hand(self):
    # head_dim 8, theta 1e4: inv_freq = 1, 0.1, 0.01, 0.001 and wavelengths
    # 2 pi / inv_freq = 6.28, 62.8, 628, 6283. With original length 1000,
    # low 1 and high 4 the bands are: < 250 kept, > 1000 divided by the
    # factor 8, and between (628) interpolated with
    # s = (1000 / 628.3 - 1) / (4 - 1) as (1 - s) f / 8 + s f.
    cfg = CFG.replace(head_dim=8, rope_theta=10_000.0, rope_scaling="llama3",
                      rope_factor=8.0, rope_low_freq_factor=1.0,
                      rope_high_freq_factor=4.0, rope_original_max_len=1000)
    s = (1000 / (2 * np.pi / 0.01) - 1) / 3
    want = [1.0, 0.1, (1 - s) * 0.01 / 8 + s * 0.01, 0.001 / 8]
    np.testing.assert_allclose(_layers.rope_inv_freq(cfg), want, rtol=1e-5)
    plain = _layers.rope_inv_freq(cfg.replace(rope_scaling=None))
    np.testing.assert_allclose(plain, [1.0, 0.1, 0.01, 0.001], rtol=1e-6)

  def test_rope_golden_values(self):
    # One pair (dim 2, inv_freq 1): x = [1, 0] at position p is [cos p, sin p].
    x = jnp.array([[[1.0, 0.0]], [[0.0, 2.0]]])         # [T=2, N=1, 2]
    out = _layers.apply_rope(x, jnp.array([1, 3]), np.array([1.0], np.float32))
    np.testing.assert_allclose(
        out[:, 0], [[np.cos(1), np.sin(1)], [-2 * np.sin(3), 2 * np.cos(3)]],
        atol=1e-6)

  def test_position_zero_is_identity_and_scores_are_relative(self):
    inv_freq = _layers.rope_inv_freq(CFG)
    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.randn(1, 1, 8), jnp.float32)   # [T, N, Dh]
    k = jnp.asarray(rng.randn(1, 1, 8), jnp.float32)
    np.testing.assert_allclose(
        _layers.apply_rope(q, jnp.zeros((1,), jnp.int32), inv_freq), q,
        atol=1e-7)

    def score(m, n):
      qm = _layers.apply_rope(q, jnp.array([m]), inv_freq)
      kn = _layers.apply_rope(k, jnp.array([n]), inv_freq)
      return float(jnp.sum(qm * kn))

    for m, n in [(3, 1), (7, 2), (5, 5)]:
      for shift in (1, 10, 40):
        self.assertAlmostEqual(score(m + shift, n + shift), score(m, n),
                               places=4)
    self.assertNotAlmostEqual(score(3, 1), score(4, 1), places=3)


class ShardingTest(absltest.TestCase):

  def test_eight_devices_equal_one(self):
    self.assertLen(jax.devices(), 8)
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    # FSDP: the embedding dimension of every weight split over 4 devices.
    fsdp = jax.tree.map(
        lambda a: NamedSharding(mesh, P(*("fsdp" if n == "embed" else None
                                          for n in a))),
        M.param_axes(CFG), is_leaf=lambda x: isinstance(x, tuple))
    self.assertEqual(fsdp["layers"]["wq"].spec, P(None, "fsdp", None, None))
    tokens, mask = full_sequences(*rollout(CFG, b=4, lengths=(6, 3, 1, 4)))
    fwd = jax.jit(lambda p, x, m: M.forward(p, CFG, x, mask_BxS=m))
    base = random_params(CFG)
    want = fwd(base, tokens, mask)
    params = jax.jit(lambda p: p, out_shardings=fsdp)(base)
    self.assertEqual(params["layers"]["w_up"].sharding, fsdp["layers"]["w_up"])
    self.assertEqual(
        params["embed"].addressable_shards[0].data.shape, (48, 8))
    batch = NamedSharding(mesh, P("data"))
    got = fwd(params, jax.device_put(tokens, batch),
              jax.device_put(mask, batch))
    self.assertEqual(got.sharding.spec[0], "data")
    np.testing.assert_allclose(got, want, atol=1e-5)


class CompileTest(absltest.TestCase):

  def test_one_scan_over_layers(self):
    tokens = jnp.zeros((1, 4), jnp.int32)
    sizes = {}
    for layers in (2, 6):
      cfg = CFG.replace(num_layers=layers)
      shapes = M.param_shapes(cfg)
      jaxpr = jax.make_jaxpr(lambda p, t: M.forward(p, cfg, t))(shapes,
                                                                tokens)
      self.assertEqual(count_scans(jaxpr.jaxpr), [layers])
      sizes[layers] = count_eqns(jaxpr.jaxpr)
      remat = jax.make_jaxpr(jax.grad(
          lambda p, t: M.forward(p, cfg.replace(remat=True), t).sum()))(
              shapes, tokens)
      # Forward and backward scans, each over the layers.
      scans = count_scans(remat.jaxpr)
      self.assertGreaterEqual(len(scans), 2)
      self.assertEqual(set(scans), {layers})
    # The program does not grow with depth.
    self.assertEqual(sizes[2], sizes[6])


class BadInputTest(absltest.TestCase):

  def test_tokens(self):
    params = M.param_shapes(CFG)
    with self.assertRaisesRegex(TypeError, "tokens_BxS.*integer"):
      M.forward(params, CFG, jnp.zeros((1, 3), jnp.float32))
    with self.assertRaisesRegex(ValueError, r"tokens_BxS.*vocab_size=48"):
      M.forward(params, CFG, jnp.array([[1, 48]], jnp.int32))
    with self.assertRaisesRegex(ValueError, "tokens_BxS.*-1"):
      M.forward(params, CFG, jnp.array([[-1, 2]], jnp.int32))
    with self.assertRaisesRegex(ValueError, "tokens_BxS must have rank 2"):
      M.forward(params, CFG, jnp.zeros((3,), jnp.int32))
    with self.assertRaisesRegex(ValueError, "mask_BxS"):
      M.forward(params, CFG, jnp.zeros((2, 3), jnp.int32),
                mask_BxS=jnp.ones((2, 4), bool))
    with self.assertRaisesRegex(ValueError, "prompt_lengths_B"):
      M.prefill(params, CFG, jnp.zeros((2, 3), jnp.int32),
                jnp.ones((3,), jnp.int32))
    _, cache = jax.eval_shape(
        lambda p: M.prefill(p, CFG, jnp.zeros((2, 3), jnp.int32),
                            jnp.ones((2,), jnp.int32)), params)
    with self.assertRaisesRegex(TypeError, "tokens_BxGxT"):
      M.extend(params, CFG, cache, jnp.zeros((2, 1, 2), jnp.float32))

  def test_model_config(self):
    with self.assertRaisesRegex(ValueError, r"num_heads \(4\).*num_kv_heads"):
      CFG.replace(num_kv_heads=3)
    with self.assertRaisesRegex(ValueError, "head_dim must be even"):
      CFG.replace(head_dim=7)
    with self.assertRaisesRegex(ValueError, "vocab_size must be a positive"):
      CFG.replace(vocab_size=0)
    with self.assertRaisesRegex(ValueError, "param_dtype"):
      CFG.replace(param_dtype="int8")
    with self.assertRaisesRegex(ValueError, "rope_scaling"):
      CFG.replace(rope_scaling="yarn")
    with self.assertRaisesRegex(ValueError, "remat must be one of"):
      CFG.replace(remat="dots")
    self.assertEqual(CFG.replace(remat=True).remat, "full")
    self.assertEqual(CFG.replace(remat=False).remat, "none")
    with self.assertRaisesRegex(ValueError, "Unknown model 'nope'"):
      M.get_model_config("nope")
    with self.assertRaisesRegex(ValueError, "depth"):
      M.get_model_config("tiny", depth=3)


if __name__ == "__main__":
  absltest.main()
