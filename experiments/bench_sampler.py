r"""The sampler benchmark: G samples per prompt, ours against torch generate.

On the benchmark model (``get_model_config("bench-tiny")``, random init,
float32) this times, side by side in one process:

* ``jax``: :func:`jaxrl_group.sampling.make_sampler`, one jitted rollout of
  B prompts x G samples x T new tokens (temperature, top-p and top-k as
  configured; each prompt prefilled once for its group).
* ``torch``: Hugging Face ``transformers`` ``Qwen2ForCausalLM.generate``
  with ``do_sample=True`` and ``num_return_sequences=G`` on the same shapes,
  holding the *same weights* (converted from ours), with the same EOS and
  pad ids, 2 torch threads and ``OMP_WAIT_POLICY=PASSIVE``. Before timing,
  its logits on left-padded prompts are checked to equal ours, so the two
  run the same model. Without torch the script says so and times ours only.
* Reference matmuls, jitted fp32 in the same run: a square
  ``n x n x n`` one and a chain of the decode step's MLP GEMMs
  (``[B * G, D] x [D, F]`` and ``[B * G, F] x [F, D]``).
* Shared prefill against the prompt repeated G times on long prompts:
  ``models.prefill`` on ``[B, P]`` against ``[B * G, P]``, and the whole
  sampler with ``share_prefill`` True against False.

Prompts are ``"a+b="`` problems of the character tokenizer (operands drawn
uniformly), left-padded to ``prompt_len``; the long prompts are few-shot
lists of solved problems ``"a+b=c\n"`` ending in an open one. With random
weights a completion ends at EOS with probability ~1/64 per token, so most
rows run to T: "valid" tokens are those up to and including EOS, "slots"
count all ``B * G * T`` output positions (padding included).

Achieved GFLOP/s counts the useful forward matmul FLOPs of a rollout with
``cfg.flops_per_token(context)`` (2 per multiply-add; attention over
``context`` keys): the prefill of each of the B prompts, position i of P
attending to i + 1 keys (left padding included, as it is computed) and only
the last position unembedded; then each decode step s = 0, 1, ... of each
of the B * G samples at context ``P + s + 1``. A rollout whose longest
sample has n tokens runs n - 1 decode steps. Dividing by the median time
gives GFLOP/s, reported as a fraction of the reference matmuls' rate.

Every figure is printed with the 1-minute load average (mean over its
repeats) beside it; timed repeats of competing implementations are
interleaved so that load changes hit both. Results go to a JSON file.

Run from the repository root::

  python experiments/bench_sampler.py
  python experiments/bench_sampler.py --config=configs/bench_sampler.py:quick
"""

import os
import statistics
import sys
import time
from typing import Any, Callable

# Read by torch's OpenMP runtime when it loads: spinning worker threads
# would steal the cores that JAX's calls run on between torch calls.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# Loaded by path (as the tests do), its folder is not on sys.path for _common.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
  sys.path.insert(0, _HERE)

# pylint: disable=g-import-not-at-top,wrong-import-position
import _common  # first: it sets JAX_PLATFORMS and finds jaxrl_group
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrl_group import models
from jaxrl_group import sampling
from jaxrl_group import tasks
# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG_PATH = os.path.join(_common.REPO_ROOT, "configs",
                                   "bench_sampler.py")
TOKENIZER = tasks.CharTokenizer()

# Measurements, in table order: (measurement, impl) -> label.
LABELS = {
    ("rollout", "jax"): "jaxrl_group sampler (jit)",
    ("rollout", "torch"): "transformers generate (torch)",
    ("matmul", "square"): "jit fp32 matmul n×n×n",
    ("matmul", "decode_gemm"): "jit fp32 decode MLP GEMMs",
    ("prefill", "shared"): "prefill [B, P] (shared)",
    ("prefill", "repeated"): "prefill [B·G, P] (repeated)",
    ("sampler_long", "shared"): "sampler share_prefill=True",
    ("sampler_long", "repeated"): "sampler share_prefill=False",
}


# --------------------------------------------------------------------------
# Inputs.


def make_prompts(n: int, width: int, max_operand: int,
                 seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """``n`` "a+b=" prompts, left-padded to ``width``.

  Returns:
    ``(texts, prompts_BxP, lengths_B)``; ids int32, ``PAD_ID`` on the left.
  """
  rng = np.random.default_rng([seed, n, width])
  ab = rng.integers(0, max_operand + 1, size=(n, 2))
  texts = [f"{a}+{b}=" for a, b in ab]
  prompts_BxP, lengths_B = TOKENIZER.encode_batch(texts, width, pad="left")
  return texts, prompts_BxP, lengths_B


def make_long_prompts(n: int, width: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Few-shot prompts: solved ``"a+b=c\\n"`` lines, then an open ``"a+b="``.

  Lines are added while the prompt fits in ``width`` (left-padded).

  Returns:
    ``(prompts_BxP, lengths_B)``, int32.
  """
  rng = np.random.default_rng([seed, n, width, 1])
  texts = []
  for _ in range(n):
    a, b = rng.integers(0, 10_000, size=2)
    text = f"{a}+{b}="
    while True:
      a, b = rng.integers(0, 10_000, size=2)
      line = f"{a}+{b}={a + b}\n"
      if len(line) + len(text) > width:
        break
      text = line + text
    texts.append(text)
  return TOKENIZER.encode_batch(texts, width, pad="left")


# --------------------------------------------------------------------------
# FLOPs and timing.


def time_repeated(call: Callable[[], Any], *, min_time_s: float = 0.2,
                  repeats: int = 5) -> dict[str, Any]:
  """Median seconds per call of a fast call, in batches of calls.

  Calls are batched until one batch lasts ``min_time_s / repeats``, so that
  dispatch overhead and timer resolution do not dominate.
  """
  call()
  number = 1
  while True:
    start = time.perf_counter()
    for _ in range(number):
      call()
    elapsed = time.perf_counter() - start
    if elapsed >= min_time_s / repeats or number >= 1 << 16:
      break
    number *= 2
  samples, cpu_samples, loads = [], [], []
  for _ in range(repeats):
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
      call()
    samples.append((time.perf_counter() - start) / number)
    cpu_samples.append((time.process_time() - cpu) / number)
    loads.append(_common.load_avg())
  return {"seconds": statistics.median(samples), "samples_s": samples,
          "cpu_seconds": statistics.median(cpu_samples),
          "cpu_samples_s": cpu_samples, "loads": loads, "number": number}


# --------------------------------------------------------------------------
# torch (Hugging Face transformers).


def import_torch():
  """``(torch, transformers)``, or ``(None, reason)`` if they are missing."""
  try:
    # pylint: disable=g-import-not-at-top
    import torch
    import transformers
  except ImportError as e:
    return None, (f"torch/transformers not installed ({e}); install the "
                  f"'hf' extra to compare")
  return torch, transformers


def hf_model(params: models.Params, cfg: models.ModelConfig, torch,
             transformers):
  """A ``Qwen2ForCausalLM`` (float32, eval mode) holding ``params``."""
  if cfg.d_model != cfg.num_heads * cfg.head_dim:
    raise ValueError("hf_model: Qwen2 needs d_model == num_heads * head_dim, "
                     f"got {cfg.d_model} != {cfg.num_heads} * "
                     f"{cfg.head_dim}.")
  if cfg.rope_scaling is not None:
    raise ValueError("hf_model: only plain RoPE is set up here, got "
                     f"rope_scaling={cfg.rope_scaling!r}.")
  hf_cfg = transformers.Qwen2Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
      intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads,
      max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
      rope_parameters={"rope_type": "default",
                       "rope_theta": cfg.rope_theta},
      tie_word_embeddings=cfg.tie_embeddings, dtype=torch.float32,
      bos_token_id=tasks.BOS_ID, eos_token_id=tasks.EOS_ID,
      pad_token_id=tasks.PAD_ID)
  model = transformers.Qwen2ForCausalLM(hf_cfg).to(torch.float32).eval()
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  d, h, k = cfg.d_model, cfg.num_heads, cfg.num_kv_heads
  dh = cfg.head_dim
  state = {"model.embed_tokens.weight": p["embed"],
           "model.norm.weight": p["final_norm"]}
  if not cfg.tie_embeddings:
    state["lm_head.weight"] = p["lm_head"].T
  lp = p["layers"]
  for i in range(cfg.num_layers):
    pre = f"model.layers.{i}."
    # Ours are [in, out] (heads split out); torch Linear weights [out, in].
    state[pre + "self_attn.q_proj.weight"] = lp["wq"][i].reshape(d, h * dh).T
    state[pre + "self_attn.k_proj.weight"] = lp["wk"][i].reshape(d, k * dh).T
    state[pre + "self_attn.v_proj.weight"] = lp["wv"][i].reshape(d, k * dh).T
    for name, n in (("q", h), ("k", k), ("v", k)):
      bias = (lp[f"b{name}"][i].reshape(n * dh) if cfg.qkv_bias
              else np.zeros(n * dh, np.float32))
      state[pre + f"self_attn.{name}_proj.bias"] = bias
    state[pre + "self_attn.o_proj.weight"] = lp["wo"][i].reshape(h * dh, d).T
    state[pre + "mlp.gate_proj.weight"] = lp["w_gate"][i].T
    state[pre + "mlp.up_proj.weight"] = lp["w_up"][i].T
    state[pre + "mlp.down_proj.weight"] = lp["w_down"][i].T
    state[pre + "input_layernorm.weight"] = lp["attn_norm"][i]
    state[pre + "post_attention_layernorm.weight"] = lp["mlp_norm"][i]
  state = {n: torch.from_numpy(np.array(v, np.float32, order="C"))
           for n, v in state.items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [m for m in missing if "rotary" not in m]
  if missing or unexpected:
    raise ValueError(f"hf_model: weights do not match: missing {missing}, "
                     f"unexpected {unexpected}.")
  return model


def check_parity(model, torch, params, cfg, prompts_BxP, lengths_B,
                 atol: float) -> float:
  """Checks torch's logits on left-padded prompts against ours.

  Returns:
    The largest absolute difference over the real positions.

  Raises:
    AssertionError: they differ by more than ``atol``.
  """
  mask_BxP, positions_BxP = models.prompt_layout(lengths_B,
                                                 prompts_BxP.shape[1])
  ours = np.asarray(jax.jit(
      lambda p, x, m: models.forward(p, cfg, x, mask_BxS=m))(
          params, prompts_BxP, mask_BxP))
  with torch.inference_mode():
    theirs = model(
        input_ids=torch.from_numpy(np.asarray(prompts_BxP, np.int64)),
        attention_mask=torch.from_numpy(np.asarray(mask_BxP, np.int64)),
        position_ids=torch.from_numpy(np.asarray(positions_BxP, np.int64)),
    ).logits.numpy()
  real = np.asarray(mask_BxP)
  err = float(np.max(np.abs(ours[real] - theirs[real])))
  if not err <= atol:
    raise AssertionError(f"torch and jax logits differ by {err:.3g} > "
                         f"{atol:g}: the two models are not the same.")
  return err


def count_valid(tokens_NxT: np.ndarray, eos_id: int) -> tuple[int, int]:
  """Tokens up to and including each row's first EOS, and the longest row."""
  is_eos = tokens_NxT == eos_id
  ended = is_eos.any(axis=1)
  lengths = np.where(ended, is_eos.argmax(axis=1) + 1, tokens_NxT.shape[1])
  return int(lengths.sum()), int(lengths.max(initial=0))


# --------------------------------------------------------------------------
# The benchmark.

_SAMPLERS = {}


def get_sampler(cfg: models.ModelConfig, **static):
  """``sampling.make_sampler(cfg, **static)``, one per setting per process.

  Measurements with the same settings (the quick config's) then share one
  compiled program.
  """
  key = (cfg, tuple(sorted(static.items())))
  if key not in _SAMPLERS:
    _SAMPLERS[key] = sampling.make_sampler(cfg, **static)
  return _SAMPLERS[key]


def _row(measurement, impl, **fields):
  row = {"measurement": measurement, "impl": impl,
         "label": LABELS[(measurement, impl)], "status": "ok",
         "skip_reason": None, "B": None, "G": None, "P": None, "T": None,
         "seconds": None, "samples_s": None, "cpu_seconds": None,
         "cpu_samples_s": None, "load_avg_1m": None,
         "loads": None, "valid_tokens": None, "slots": None,
         "valid_tokens_per_s": None, "slots_per_s": None, "gflop": None,
         "gflop_per_s": None}
  row.update(fields)
  return row


def _timed_fields(res: dict[str, Any]) -> dict[str, Any]:
  return {"seconds": res["seconds"], "samples_s": res["samples_s"],
          "cpu_seconds": res["cpu_seconds"],
          "cpu_samples_s": res["cpu_samples_s"], "loads": res["loads"],
          "load_avg_1m": statistics.fmean(res["loads"])}


def metadata(config, torch, transformers) -> dict[str, Any]:
  """Versions, device and machine of this run."""
  return _common.metadata(
      config,
      libraries={
          "torch_version": getattr(torch, "__version__", None),
          "transformers_version": getattr(transformers, "__version__",
                                          None),
          "torch_threads": torch.get_num_threads() if torch else None},
      env=("JAX_PLATFORMS", "XLA_FLAGS", "OMP_WAIT_POLICY"))


def bench_rollouts(config, cfg, params, torch, transformers, checks
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Ours against torch generate, interleaved; returns (rows, extra)."""
  b, g, t = config.num_prompts, config.group_size, config.max_new_tokens
  texts, prompts_np, lengths_np = make_prompts(
      b, config.prompt_len, config.max_operand, config.seed)
  p = prompts_np.shape[1]
  slots = b * g * t
  prompts_BxP, lengths_B = jnp.asarray(prompts_np), jnp.asarray(lengths_np)
  sampler = get_sampler(cfg, group_size=g, max_new_tokens=t,
                        eos_ids=(tasks.EOS_ID,), pad_id=tasks.PAD_ID,
                        share_prefill=True)
  knobs = dict(temperature=config.temperature, top_p=config.top_p,
               top_k=config.top_k)
  key = jax.random.key(config.seed)
  counter = iter(range(1 << 30))

  def ours():
    r = sampler(params, prompts_BxP, lengths_B,
                jax.random.fold_in(key, next(counter)), **knobs)
    lengths = np.asarray(jax.block_until_ready(r.lengths_BxG))
    return int(lengths.sum()), int(lengths.max())

  first_s, _, _, _ = _common.time_call(ours, cpu_time=True)
  calls = {"jax": ours}
  skip_reason = None
  if torch is None:
    skip_reason = transformers
  elif not config.torch:
    skip_reason = "disabled by config.torch = False"
  if skip_reason is None:
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    model = hf_model(params, cfg, torch, transformers)
    err = check_parity(model, torch, params, cfg, prompts_BxP, lengths_B,
                       config.parity_atol)
    checks.append({"check": "torch logits == jax logits (left-padded "
                            "prompts)", "max_abs_err": err,
                   "passed": True})
    ids = torch.from_numpy(prompts_np.astype(np.int64))
    attn = torch.from_numpy((prompts_np != tasks.PAD_ID).astype(np.int64))
    # The torch model's own defaults (e.g. top_k=50) must not apply.
    gen = transformers.GenerationConfig(
        do_sample=True, num_return_sequences=g, max_new_tokens=t,
        temperature=config.temperature, top_p=config.top_p,
        top_k=config.top_k,  # 0 disables it, as in ours
        eos_token_id=tasks.EOS_ID, pad_token_id=tasks.PAD_ID,
        bos_token_id=tasks.BOS_ID)

    def theirs():
      with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=attn,
                             generation_config=gen)
      return count_valid(out[:, p:].numpy(), tasks.EOS_ID)

    calls["torch"] = theirs
  res = _common.time_interleaved(calls, config.repeats, config.warmup,
                                 cpu_time=True)
  rows = []
  for impl, r in res.items():
    valid = statistics.fmean(v for v, _ in r["outputs"])
    gflop = statistics.fmean(
        _common.rollout_flops(cfg, b, g, p, longest)
        for _, longest in r["outputs"]) / 1e9
    rows.append(_row(
        "rollout", impl, B=b, G=g, P=p, T=t, **_timed_fields(r),
        valid_tokens=valid, slots=slots,
        valid_tokens_per_s=valid / r["seconds"],
        slots_per_s=slots / r["seconds"], gflop=gflop,
        gflop_per_s=gflop / r["seconds"]))
    _common.progress(config, f"rollout {impl}: {r['seconds'] * 1e3:.1f} ms, "
                             f"load {rows[-1]['load_avg_1m']:.2f}")
  if skip_reason is not None:
    rows.append(_row("rollout", "torch", B=b, G=g, P=p, T=t,
                     status="skipped", skip_reason=skip_reason,
                     load_avg_1m=_common.load_avg()))
    _common.progress(config, f"rollout torch: skipped, {skip_reason}")
  rows[0]["first_call_s"] = first_s
  rows[0]["compile_s"] = max(first_s - rows[0]["seconds"], 0.0)
  extra = {"prompt_examples": texts[:4], "prompt_len": p,
           "prompt_lengths": lengths_np.tolist()}
  return rows, extra


def bench_matmuls(config, cfg) -> list[dict[str, Any]]:
  """The reference matmul rates, jitted fp32."""
  rows = []
  n = config.matmul_size
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  square = jax.jit(lambda x: x @ x)
  r = time_repeated(lambda: square(a).block_until_ready())
  gflop = 2 * n ** 3 / 1e9
  rows.append(_row("matmul", "square", **_timed_fields(r), gflop=gflop,
                   gflop_per_s=gflop / r["seconds"], shape=f"{n}×{n}×{n}"))
  m, d, f = config.num_prompts * config.group_size, cfg.d_model, cfg.mlp_dim
  k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(k1, (m, d), jnp.float32)
  w_up = cfg.init_std * jax.random.normal(k2, (d, f), jnp.float32)
  w_down = cfg.init_std * jax.random.normal(k3, (f, d), jnp.float32)

  @jax.jit
  def chain(x):
    for _ in range(config.matmul_chain):
      # relu keeps XLA from merging the pair into one product.
      x = x + jax.nn.relu(x @ w_up) @ w_down
    return x

  r = time_repeated(lambda: chain(x).block_until_ready())
  gflop = config.matmul_chain * 2 * (2 * m * d * f) / 1e9
  rows.append(_row("matmul", "decode_gemm", **_timed_fields(r), gflop=gflop,
                   gflop_per_s=gflop / r["seconds"],
                   shape=f"{config.matmul_chain}× ({m}×{d}×{f} + "
                         f"{m}×{f}×{d})"))
  for row in rows:
    _common.progress(config, f"matmul {row['impl']}: "
                             f"{row['gflop_per_s']:.1f} GFLOP/s, load "
                             f"{row['load_avg_1m']:.2f}")
  return rows


def bench_shared_prefill(config, cfg, params) -> list[dict[str, Any]]:
  """Shared against repeated prefill on long prompts, and whole samplers."""
  b, g = config.long_num_prompts, config.long_group_size
  prompts_np, lengths_np = make_long_prompts(b, config.long_prompt_len,
                                             config.seed)
  p = prompts_np.shape[1]
  prompts_BxP, lengths_B = jnp.asarray(prompts_np), jnp.asarray(lengths_np)
  rep_prompts = jnp.repeat(prompts_BxP, g, axis=0)
  rep_lengths = jnp.repeat(lengths_B, g, axis=0)
  prefill = jax.jit(lambda prm, x, n: models.prefill(prm, cfg, x, n))

  def block(out):
    return jax.block_until_ready(out)

  res = _common.time_interleaved(
      {"shared": lambda: block(prefill(params, prompts_BxP, lengths_B)),
       "repeated": lambda: block(prefill(params, rep_prompts, rep_lengths))},
      config.long_repeats, config.warmup, cpu_time=True)
  rows = []
  for impl, r in res.items():
    n = b if impl == "shared" else b * g
    gflop = _common.prefill_flops(cfg, n, p) / 1e9
    rows.append(_row("prefill", impl, B=b, G=g, P=p, **_timed_fields(r),
                     gflop=gflop, gflop_per_s=gflop / r["seconds"]))
  t = config.long_new_tokens
  samplers = {
      impl: get_sampler(cfg, group_size=g, max_new_tokens=t,
                        eos_ids=(tasks.EOS_ID,), pad_id=tasks.PAD_ID,
                        share_prefill=impl == "shared")
      for impl in ("shared", "repeated")}
  key = jax.random.key(config.seed + 1)
  outs = {}

  def run(impl):
    def call():
      r = samplers[impl](params, prompts_BxP, lengths_B, key)
      outs[impl] = jax.block_until_ready(r)
    return call

  res = _common.time_interleaved({k: run(k) for k in samplers},
                                 config.long_repeats, config.warmup,
                                 cpu_time=True)
  for impl, r in res.items():
    rows.append(_row("sampler_long", impl, B=b, G=g, P=p, T=t,
                     **_timed_fields(r), slots=b * g * t,
                     slots_per_s=b * g * t / r["seconds"]))
  for row in rows:
    _common.progress(config, f"{row['measurement']} {row['impl']}: "
                             f"{row['seconds'] * 1e3:.1f} ms, load "
                             f"{row['load_avg_1m']:.2f}")
  # Same key, same samples: the two layouts must agree.
  np.testing.assert_array_equal(outs["shared"].tokens_BxGxT,
                                outs["repeated"].tokens_BxGxT)
  return rows


def _ratio(a, b):
  return None if a is None or b is None else a / b


def headline(rows: list[dict[str, Any]], config) -> dict[str, Any]:
  """The ratios the benchmark is about, with their targets."""
  ours = _common.get_row(rows, "rollout", "jax")
  theirs = _common.get_row(rows, "rollout", "torch")
  square = _common.get_row(rows, "matmul", "square")
  gemm = _common.get_row(rows, "matmul", "decode_gemm")
  return {
      "valid_tokens_per_s": ours["valid_tokens_per_s"],
      "slots_per_s": ours["slots_per_s"],
      "rollout_s": ours["seconds"],
      "compile_s": ours["compile_s"],
      "gflop_per_s": ours["gflop_per_s"],
      "fraction_of_square_matmul": ours["gflop_per_s"]
                                   / square["gflop_per_s"],
      "fraction_of_decode_gemm": ours["gflop_per_s"] / gemm["gflop_per_s"],
      "torch_status": theirs["status"],
      "torch_skip_reason": theirs["skip_reason"],
      "vs_torch_valid_tokens": _ratio(ours["valid_tokens_per_s"],
                                      theirs["valid_tokens_per_s"]),
      "vs_torch_slots": _ratio(ours["slots_per_s"], theirs["slots_per_s"]),
      # torch's CPU time per rollout over ours (all threads of each).
      "vs_torch_cpu_time": _ratio(theirs["cpu_seconds"], ours["cpu_seconds"]),
      "target_vs_torch": config.target_vs_torch,
      "shared_prefill_speedup": (
          _common.get_row(rows, "prefill", "repeated")["seconds"]
          / _common.get_row(rows, "prefill", "shared")["seconds"]),
      "shared_sampler_speedup": (
          _common.get_row(rows, "sampler_long", "repeated")["seconds"]
          / _common.get_row(rows, "sampler_long", "shared")["seconds"]),
      "target_shared_prefill": config.target_shared_prefill,
  }


def run_benchmark(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs every measurement; returns ``{"metadata", "rows", ...}``.

  Args:
    config: from ``configs/bench_sampler.py``.

  Returns:
    A JSON-serialisable dict: ``metadata``, ``rows`` (one per measurement
    and implementation; skipped ones carry ``skip_reason``), ``checks``
    (those that passed; a failing one raises), ``headline`` and
    ``prompts`` (examples of what was sampled from).
  """
  start = time.perf_counter()
  torch, transformers = (import_torch() if config.torch
                         else (None, "disabled by config.torch = False"))
  meta = metadata(config, torch, transformers)
  meta["load_avg_1m_start"] = _common.load_avg()
  cfg = models.get_model_config(config.model)
  # One compiled init instead of one small program per parameter.
  params = jax.jit(models.init_params, static_argnums=0)(
      cfg, jax.random.key(config.seed))
  meta["model"] = {"name": config.model, "num_params": cfg.num_params(),
                   **{k: getattr(cfg, k) for k in (
                       "vocab_size", "d_model", "num_layers", "num_heads",
                       "num_kv_heads", "head_dim", "mlp_dim", "rope_theta",
                       "param_dtype", "dtype")}}
  checks = []
  rows, prompts = bench_rollouts(config, cfg, params, torch, transformers,
                                 checks)
  rows += bench_matmuls(config, cfg)
  rows += bench_shared_prefill(config, cfg, params)
  checks.append({"check": "share_prefill=True tokens == share_prefill="
                          "False tokens (long prompts)", "max_abs_err": 0.0,
                 "passed": True})
  meta["load_avg_1m_end"] = _common.load_avg()
  meta["total_time_s"] = time.perf_counter() - start
  return {"metadata": meta, "rows": rows, "checks": checks,
          "headline": headline(rows, config), "prompts": prompts}


# --------------------------------------------------------------------------
# Output.


def format_table(rows: list[dict[str, Any]]) -> str:
  """The results as a markdown table (skipped rows say why)."""
  lines = ["| measurement | implementation | shape | ms (median) | "
           "CPU ms | valid tok/s | slot tok/s | GFLOP/s | load avg |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r.get("shape"):
      shape = r["shape"]
    elif r["T"] is not None:
      shape = f"B={r['B']} G={r['G']} P={r['P']} T={r['T']}"
    else:
      shape = f"B={r['B']} G={r['G']} P={r['P']}"
    if r["status"] == "ok":
      ms = f"{r['seconds'] * 1e3:,.2f}"
      cpu_ms = f"{r['cpu_seconds'] * 1e3:,.1f}"
    else:
      ms, cpu_ms = f"SKIPPED: {r['skip_reason']}", "—"
    lines.append(
        f"| {r['measurement']} | {r['label']} | {shape} | {ms} | {cpu_ms} | "
        f"{_common.num(r['valid_tokens_per_s'], ',.0f')} | "
        f"{_common.num(r['slots_per_s'], ',.0f')} | "
        f"{_common.num(r['gflop_per_s'], '.1f')} | {r['load_avg_1m']:.2f} |")
  return "\n".join(lines)


def format_summary(results: dict[str, Any]) -> str:
  """The headline ratios, the checks and the run time, as text."""
  h, meta = results["headline"], results["metadata"]
  rows = results["rows"]
  ours = _common.get_row(rows, "rollout", "jax")
  theirs = _common.get_row(rows, "rollout", "torch")
  lines = [f"Headline ({meta['model']['name']}, B={ours['B']} G={ours['G']} "
           f"P={ours['P']} T={ours['T']}):"]
  lines.append(
      f"  ours: {h['valid_tokens_per_s']:,.0f} valid tok/s, "
      f"{h['slots_per_s']:,.0f} slot tok/s, {h['rollout_s'] * 1e3:.1f} ms "
      f"per rollout batch (median, load {ours['load_avg_1m']:.2f}); "
      f"compile {h['compile_s']:.2f} s")
  lines.append(
      f"  achieved {h['gflop_per_s']:.1f} GFLOP/s = "
      f"{h['fraction_of_square_matmul']:.0%} of the square matmul, "
      f"{h['fraction_of_decode_gemm']:.0%} of the decode GEMM chain")
  if h["vs_torch_slots"] is None:
    lines.append(f"  vs torch generate: not measured "
                 f"({h['torch_skip_reason']})")
  else:
    t = h["target_vs_torch"]
    lines.append(
        f"  vs torch generate: {h['vs_torch_valid_tokens']:.2f}× valid "
        f"tok/s ({_common.verdict(h['vs_torch_valid_tokens'], t)} the target "
        f"≥ {t:g}×), {h['vs_torch_slots']:.2f}× slot tok/s "
        f"({_common.verdict(h['vs_torch_slots'], t)}); torch load "
        f"{theirs['load_avg_1m']:.2f}; torch uses "
        f"{h['vs_torch_cpu_time']:.2f}× our CPU time per rollout")
  t = h["target_shared_prefill"]
  lines.append(
      f"  shared prefill vs repeated: {h['shared_prefill_speedup']:.2f}× "
      f"prefill alone ({_common.verdict(h['shared_prefill_speedup'], t)} the "
      f"target ≥ {t:g}×), {h['shared_sampler_speedup']:.2f}× whole sampler")
  examples = ", ".join(repr(s) for s in results["prompts"]["prompt_examples"])
  lines.append(f"Prompts: {examples}, ... (left-padded); random init "
               "weights, the same in both.")
  worst = max((c["max_abs_err"] for c in results["checks"]), default=0.0)
  lines.append(f"Correctness: {len(results['checks'])} checks passed (max "
               f"abs diff {worst:.2e}).")
  lines.append(_common.machine_summary(
      meta, f", torch {meta['torch_version']}"))
  return "\n".join(lines)


def run_and_report(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the benchmark, prints the table and summary, writes the JSON."""
  return _common.run_and_report(config, run_benchmark, format_table,
                                format_summary)


if __name__ == "__main__":
  _common.run_main(DEFAULT_CONFIG_PATH, run_and_report)
