r"""The train-step benchmark: one GRPO step of the add2 experiment, timed.

The step is built the way ``jaxrl_group.train.loop`` builds it, from the
experiment config (``configs/add2_grpo.py``) with the benchmark's fields
overridden (``configs/bench_step.py``): the benchmark model
(``get_model_config("bench-tiny")``, random init, float32), add2 prompts
left-padded to 16 tokens, 16 prompts x G = 8 samples x up to 32 new tokens
at temperature 1 and top-p 1, GRPO advantages, the PPO clip objective
(eps 0.2, no KL, sequence-mean token-mean aggregation) and one AdamW step
(lr 1e-5, gradient norm clipped to 1) per rollout batch, on one device.
Each compiled function is timed, its repeats interleaved with the others':

* ``rollout``: the bare sampler, ``jax.jit(step.make_rollout_fn(...))``.
* ``collect``: the step's sampling half (rollout, verifier, advantages).
* ``learn``: the step's learning half (forward, backward and the optimizer
  update) on a fixed ``data`` from one ``collect``.
* ``step``: the whole ``train_step`` drawing its batch on device
  (``with_batches``, as the host loop runs it), jitted with the state
  donated; its state carries over from call to call.
* ``matmul``: plain jitted fp32 matmuls, the reference rate: a square
  ``n x n x n`` one and the learner's largest GEMM ``[B G T, D] x [D, F]``
  (a sample runs enough of them back to back to last
  ``matmul_sample_s``).

Compile time is reported apart from the steady state: ``lower_s`` (trace
and lower), ``compile_s`` (XLA) and ``first_call_s`` (the first run of the
compiled program); ``warmup_s`` is what a plain ``jax.jit`` call pays the
first time beyond a steady call, ``lower_s + compile_s + first_call_s -
seconds``.

Tokens: with random weights a completion ends at EOS with probability about
1/64 per token, so most rows run all T tokens; every reward, hence every
advantage and the gradient, is 0 (the compiled programs do the same work
whatever the values). "Valid" tokens are generated tokens up to and
including EOS; "slots" are all ``B G T`` output positions. The learner's
tokens are prompt and completion tokens of every sample (slots
``B G (P + T)``; valid: real prompt tokens and valid completion tokens).

FLOPs, 2 per multiply-add, from ``cfg.flops_per_token(context)`` (the
weights' matmuls plus attention over ``context`` keys):

* executed (the work this layout does): the sampler prefills each of the B
  prompts once (position i attends to i + 1 keys, left padding included as
  it is computed; only the last position unembedded) and runs ``n - 1``
  decode steps of all ``B G`` samples, n the longest sample's length
  (step s at context ``P + s + 1``). The learner runs the same prefill and
  a teacher-forced pass over all ``B G T`` completion slots (slot t at
  context ``P + t + 1``), forward and backward: 3 times the forward FLOPs.
  For the whole step n is T when a sample was truncated (always, with
  random weights), else T as an upper bound.
* nominal (the usual count, prompts repeated per sample, no attention):
  ``2 N B G T`` for sampling plus ``6 N B G (P + T)`` for learning, N the
  number of parameters.

Achieved GFLOP/s is FLOPs over the median time. Its fraction of the
reference matmuls' rate is the median over rounds of the ratio within a
round, as the load of a shared machine moves between rounds. Every figure
carries the 1-minute load average (mean over its repeats); the JSON keeps
every sample with the load after it.

Run from the repository root::

  python experiments/bench_step.py
  python experiments/bench_step.py --config=configs/bench_step.py:quick
"""

import importlib.util
import os
import statistics
import sys
import time
from typing import Any, Callable

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
from jaxrl_group.train import build as build_lib
from jaxrl_group.train import step as step_lib
from jaxrl_group.train.state import TrainState
# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG_PATH = os.path.join(_common.REPO_ROOT, "configs",
                                   "bench_step.py")

# Measurements, in table order: (measurement, impl) -> label.
LABELS = {
    ("rollout", "sampler"): "bare sampler, jit(make_rollout_fn)",
    ("collect", "step"): "sampling half, jit(step.collect)",
    ("learn", "step"): "learning half, jit(step.learn)",
    ("step", "step"): "whole step, jit(train_step), donated",
    ("matmul", "square"): "jit fp32 matmul n×n×n",
    ("matmul", "learner_gemm"): "jit fp32 learner GEMM",
}
# What the token columns of each measurement count.
TOKENS_COUNTED = {"rollout": "generated", "collect": "generated",
                  "learn": "prompt+completion", "step": "generated"}


# --------------------------------------------------------------------------
# The experiment.


def load_experiment_config(path: str) -> ml_collections.ConfigDict:
  """The default config of an experiment config file (repo-relative path)."""
  full = (path if os.path.isabs(path)
          else os.path.join(_common.REPO_ROOT, path))
  spec = importlib.util.spec_from_file_location("experiment_config", full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def experiment_config(config) -> ml_collections.ConfigDict:
  """The experiment config with the benchmark's fields set.

  Every model field of the experiment config takes the named model's value
  (the experiment config sets its own widths, which must not leak in).
  """
  c = load_experiment_config(config.experiment)
  base = models.get_model_config(config.model)
  with c.unlocked():
    for field in c.model.keys():
      if field != "name":
        c.model[field] = getattr(base, field)
    c.model.update(name=config.model, param_dtype=config.param_dtype,
                   dtype=config.dtype)
    c.task.update(name=config.task, prompt_len=config.prompt_len)
    c.sampler.update(group_size=config.group_size,
                     max_new_tokens=config.max_new_tokens,
                     temperature=config.temperature, top_p=config.top_p,
                     top_k=0)
    c.advantage.update(name=config.advantage, kwargs="", preset="")
    c.loss.update(surrogate="ppo_clip", clip_eps=config.clip_eps,
                  surrogate_kwargs="", aggregation=config.aggregation,
                  kl_coef=0.0, entropy_coef=0.0,
                  num_iterations=config.num_iterations, num_minibatches=1)
    c.optim.update(name="adamw", lr=config.lr, warmup_steps=0,
                   schedule="constant", max_grad_norm=config.max_grad_norm)
    c.rl.prompts_per_step = config.num_prompts
    c.mesh.num_devices = 1
    c.seed = config.seed
  return c


def make_step(c, exp: build_lib.Experiment) -> Callable:
  """The RL ``train_step`` of an experiment, as the host loop builds it."""
  return build_lib.make_rl_step(c, exp)


def initial_state(c, exp: build_lib.Experiment) -> TrainState:
  """A fresh RL state (random policy); the same arrays for the same config."""
  cfg = exp.model_cfg
  root = jax.random.key(c.seed)
  params = jax.jit(models.init_params, static_argnums=0)(
      cfg, jax.random.fold_in(root, 0))
  spec = jax.ShapeDtypeStruct((c.rl.prompts_per_step, exp.sampler.group_size),
                              jnp.float32)
  ref = jax.tree.map(jnp.copy, params) if exp.needs_ref_params else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=jax.jit(exp.rl_optimizer.init)(params),
                    adv_state=exp.adv_tx.init(spec),
                    key=jax.random.fold_in(root, 2), ref_params=ref)


def step_batch_key(state_key: jax.Array, step: int) -> jax.Array:
  """The key ``with_batches`` draws step ``step``'s batch with."""
  return jax.random.fold_in(jax.random.fold_in(state_key, step), 1)


def sample_key(state_key: jax.Array, step: int) -> jax.Array:
  """The key ``collect`` samples step ``step``'s rollouts with."""
  return jax.random.split(jax.random.fold_in(state_key, step), 3)[0]


# --------------------------------------------------------------------------
# FLOPs.


def learner_flops(cfg: models.ModelConfig, b: int, g: int, p: int,
                  t: int) -> int:
  """Executed FLOPs of one forward and backward pass of the learner.

  Args:
    cfg: the model.
    b: prompts B (each prefilled once).
    g: samples per prompt G.
    p: prompt width P.
    t: completion slots T (all computed, whatever the lengths).

  Returns:
    3 times the forward FLOPs of the prefill and of the ``B G T`` slots.
  """
  forward = sum(cfg.flops_per_token(p + s + 1) for s in range(t))
  return 3 * (_common.prefill_flops(cfg, b, p) + b * g * forward)


def nominal_flops(cfg: models.ModelConfig, b: int, g: int, p: int,
                  t: int) -> dict[str, int]:
  """``2 N B G T`` sampling and ``6 N B G (P + T)`` learning FLOPs."""
  n = cfg.num_params()
  return {"sampler": 2 * n * b * g * t, "learner": 6 * n * b * g * (p + t)}


# --------------------------------------------------------------------------
# Timing.


def compile_timed(fn: Callable, *args, compiler_options=None,
                  **jit_kwargs) -> tuple[Any, dict]:
  """``jax.jit(fn, **jit_kwargs)`` compiled for ``args``, with its times.

  Args:
    fn: the function.
    *args: example arguments (arrays or ``jax.ShapeDtypeStruct``).
    compiler_options: XLA options for the compile, or None.
    **jit_kwargs: passed to ``jax.jit`` (e.g. ``donate_argnums``).

  Returns:
    ``(compiled, {"lower_s", "compile_s"})``.
  """
  jitted = jax.jit(fn, **jit_kwargs)
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile(compiler_options=compiler_options or None)
  done = time.perf_counter()
  return compiled, {"lower_s": lowered_at - start,
                    "compile_s": done - lowered_at}


def calls_per_sample(call: Callable[[], Any], min_time_s: float) -> int:
  """How many calls of a fast ``call`` make one sample of ``min_time_s``.

  The call runs once untimed (it compiles), then in doubling batches until
  a batch lasts ``min_time_s``, so that dispatch overhead and timer
  resolution do not dominate a sample.
  """
  call()
  number = 1
  while number < 1 << 16:
    start = time.perf_counter()
    for _ in range(number):
      call()
    if time.perf_counter() - start >= min_time_s:
      break
    number *= 2
  return number


# --------------------------------------------------------------------------
# The benchmark.


def _row(measurement, impl, **fields):
  row = {"measurement": measurement, "impl": impl,
         "label": LABELS[(measurement, impl)],
         "tokens_counted": TOKENS_COUNTED.get(measurement), "shape": None,
         "seconds": None, "min_s": None, "samples_s": None,
         "load_avg_1m": None,
         "loads": None, "lower_s": None, "compile_s": None,
         "first_call_s": None, "warmup_s": None, "valid_tokens": None,
         "slots": None, "valid_tokens_per_s": None, "slots_per_s": None,
         "gflop": None, "gflop_per_s": None, "nominal_gflop": None,
         "nominal_gflop_per_s": None, "fraction_of_matmul": None}
  row.update(fields)
  return row


def _timed_fields(res: dict[str, Any]) -> dict[str, Any]:
  return {"seconds": res["seconds"], "min_s": min(res["samples_s"]),
          "samples_s": res["samples_s"], "loads": res["loads"],
          "load_avg_1m": statistics.fmean(res["loads"])}


def round_fraction(row: dict[str, Any], ref: dict[str, Any],
                   flops_key: str = "gflop") -> float:
  """Median over the timed rounds of ``row``'s GFLOP/s over ``ref``'s.

  Both were timed in the same rounds (sample i of each in round i), so
  each ratio compares rates under the same load, which moves between
  rounds on a shared machine.
  """
  return statistics.median(
      (row[flops_key] / s) / (ref["gflop"] / r)
      for s, r in zip(row["samples_s"], ref["samples_s"]))


def _compile_fields(times: dict[str, float], first_s: float,
                    seconds: float) -> dict[str, float]:
  return {**times, "first_call_s": first_s,
          "warmup_s": max(times["lower_s"] + times["compile_s"] + first_s
                          - seconds, 0.0)}


def metadata(config, c, exp) -> dict[str, Any]:
  """Versions, device, machine and the model of this run."""
  cfg = exp.model_cfg
  return {
      **_common.metadata(config, devices={"num_devices_used": 1}),
      "experiment_config": c.to_dict(),
      "model": {"name": config.model, "num_params": cfg.num_params(),
                **{k: getattr(cfg, k) for k in (
                    "vocab_size", "d_model", "num_layers", "num_heads",
                    "num_kv_heads", "head_dim", "mlp_dim", "max_seq_len",
                    "param_dtype", "dtype", "remat")}},
  }


def _max_abs_diff(a, b) -> float:
  diffs = jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                       - np.asarray(y, np.float64)),
                                initial=0.0)), a, b))
  return max(diffs, default=0.0)


def consistency_checks(params0, ref_params, step_params, rollout_tokens,
                       collect_tokens, step_metrics, collect_metrics
                       ) -> list[dict[str, Any]]:
  """Checks that the timed functions do the same work as each other.

  Args:
    params0: the parameters before any update.
    ref_params: ``learn(state0, collect(state0, batch0))``'s parameters.
    step_params: the whole step's parameters after its first call on an
      equal state and the same batch.
    rollout_tokens: the bare sampler's tokens (state0's params, batch0 and
      collect's key).
    collect_tokens: ``collect(state0, batch0)``'s tokens.
    step_metrics: the whole step's first metrics (host values).
    collect_metrics: ``collect(state0, batch0)``'s metrics.

  Returns:
    The checks, each with ``passed``.

  Raises:
    AssertionError: a check failed (the programs compute different things).
  """
  checks = []
  same = float(np.mean(np.asarray(rollout_tokens)
                       == np.asarray(collect_tokens)))
  # Separately compiled programs may round a logit differently, which can
  # flip a rare sample; more than that means different sampling.
  checks.append({"check": "bare sampler tokens == collect tokens (same "
                          "params, batch and key)",
                 "fraction_equal": same, "passed": same >= 0.99})
  for k in ("sampled_tokens", "reward"):
    a, b = float(step_metrics[k]), float(collect_metrics[k])
    checks.append({"check": f"step {k} == collect {k} (same state and "
                            "batch)", "max_abs_err": abs(a - b),
                   "passed": abs(a - b) <= 1e-6 * max(1.0, abs(b))
                             or same < 1.0})
  update = _max_abs_diff(ref_params, params0)
  diff = _max_abs_diff(step_params, ref_params)
  checks.append({"check": "step params == learn(collect) params (same "
                          "state and batch)", "max_abs_err": diff,
                 "max_abs_update": update,
                 "passed": diff <= 1e-6 + 0.05 * update})
  failed = [ch["check"] for ch in checks if not ch["passed"]]
  if failed:
    raise AssertionError(f"consistency checks failed: {failed}; details: "
                         f"{checks}")
  return checks


def bench_step(config, c, exp, checks) -> tuple[list[dict[str, Any]],
                                                dict[str, Any]]:
  """Times the sampler, the two halves, the whole step and the matmuls.

  Returns:
    ``(rows, extra)``: a row per measurement, and the first step's, the
    ``collect``'s and the ``learn``'s training metrics.
  """
  cfg = exp.model_cfg
  b, g = c.rl.prompts_per_step, exp.sampler.group_size
  p, t = exp.task.prompt_len, exp.sampler.max_new_tokens
  train_step = make_step(c, exp)
  step_fn = step_lib.with_batches(
      train_step, lambda k: exp.task.sample(k, b))
  rollout_fn = step_lib.make_rollout_fn(cfg, exp.sampler)

  state0 = initial_state(c, exp)
  batch0 = exp.task.sample(step_batch_key(state0.key, 0), b)
  key0 = sample_key(state0.key, 0)
  # The whole step donates its state, so it gets its own (equal) arrays.
  step_state = {"state": initial_state(c, exp)}

  compiled, times = {}, {}
  opts = dict(config.compiler_options)
  compiled["rollout"], times["rollout"] = compile_timed(
      rollout_fn, state0.params, batch0, key0, compiler_options=opts)
  _common.progress(
      config, f"compiled rollout in {sum(times['rollout'].values()):.1f} s")
  compiled["collect"], times["collect"] = compile_timed(
      train_step.collect, state0, batch0, compiler_options=opts)
  _common.progress(
      config, f"compiled collect in {sum(times['collect'].values()):.1f} s")
  data0, _, cmetrics0 = compiled["collect"](state0, batch0)
  compiled["learn"], times["learn"] = compile_timed(
      train_step.learn, state0, data0, compiler_options=opts)
  _common.progress(
      config, f"compiled learn in {sum(times['learn'].values()):.1f} s")
  compiled["step"], times["step"] = compile_timed(
      step_fn, step_state["state"], donate_argnums=0,
      compiler_options=opts)
  _common.progress(
      config, f"compiled step in {sum(times['step'].values()):.1f} s")

  def rollout():
    r = compiled["rollout"](state0.params, batch0, key0)
    lengths = np.asarray(r.lengths_BxG)
    return int(lengths.sum()), int(lengths.max())

  def collect():
    data, _, m = compiled["collect"](state0, batch0)
    lengths = np.asarray(data["mask"]).sum(axis=-1)
    return int(m["sampled_tokens"]), int(lengths.max())

  def learn():
    params, _, _ = compiled["learn"](state0, data0)
    jax.block_until_ready(params)

  step_metrics = []

  def step():
    step_state["state"], m = compiled["step"](step_state["state"])
    m = jax.device_get(m)
    step_metrics.append(m)
    # The longest sample is not returned: T when one was truncated, else T
    # bounds it (see the module docstring).
    return int(m["sampled_tokens"]), t

  # First calls (after compiling), apart from the steady state. The whole
  # step's first call starts from state0's equal, so its result is checked
  # against learn(collect(...)) on the same state and batch.
  first = {k: _common.time_call(f)[0] for k, f in (
      ("rollout", rollout), ("collect", collect), ("learn", learn),
      ("step", step))}
  step_params1 = jax.device_get(step_state["state"].params)
  step0 = step_metrics[0]
  ref_params, _, lmetrics0 = compiled["learn"](state0, data0)
  ref_rollout = compiled["rollout"](state0.params, batch0, key0)
  checks.extend(consistency_checks(
      state0.params, ref_params, step_params1, ref_rollout.tokens_BxGxT,
      data0["tokens"], step0, cmetrics0))
  # The reference matmuls run in the same rounds, so that their rate is
  # measured under the same load as the step's.
  matmuls = matmul_calls(config, exp)
  res = _common.time_interleaved(
      {"rollout": rollout, "collect": collect, "learn": learn, "step": step,
       **{f"matmul_{k}": v["call"] for k, v in matmuls.items()}},
      config.repeats)
  rows = []
  nominal = nominal_flops(cfg, b, g, p, t)
  learn_gflop = learner_flops(cfg, b, g, p, t) / 1e9
  shape = f"B={b} G={g} P={p} T={t}"
  for name in ("rollout", "collect", "learn", "step"):
    r = res[name]
    fields = {**_timed_fields(r),
              **_compile_fields(times[name], first[name], r["seconds"])}
    if name == "learn":
      valid = (g * int(np.sum(np.asarray(batch0.prompt_lengths_B)))
               + int(cmetrics0["sampled_tokens"]))
      slots = b * g * (p + t)
      gflop, nominal_gflop = learn_gflop, nominal["learner"] / 1e9
    else:
      valid = statistics.fmean(v for v, _ in r["outputs"])
      slots = b * g * t
      gflop = statistics.fmean(_common.rollout_flops(cfg, b, g, p, longest)
                               for _, longest in r["outputs"]) / 1e9
      nominal_gflop = nominal["sampler"] / 1e9
      if name == "step":
        gflop += learn_gflop
        nominal_gflop += nominal["learner"] / 1e9
    rows.append(_row(
        name, "sampler" if name == "rollout" else "step", shape=shape,
        B=b, G=g, P=p, T=t, **fields, valid_tokens=valid, slots=slots,
        valid_tokens_per_s=valid / r["seconds"],
        slots_per_s=slots / r["seconds"], gflop=gflop,
        gflop_per_s=gflop / r["seconds"], nominal_gflop=nominal_gflop,
        nominal_gflop_per_s=nominal_gflop / r["seconds"]))
    _common.progress(config, f"{name}: {r['seconds'] * 1e3:.1f} ms, load "
                             f"{rows[-1]['load_avg_1m']:.2f}")
  for impl, mm in matmuls.items():
    r = res[f"matmul_{impl}"]
    per_call = [x / mm["number"] for x in r["samples_s"]]
    seconds = statistics.median(per_call)
    rows.append(_row(
        "matmul", impl, seconds=seconds, min_s=min(per_call),
        samples_s=per_call, loads=r["loads"],
        load_avg_1m=statistics.fmean(r["loads"]),
        calls_per_sample=mm["number"], gflop=mm["gflop"],
        gflop_per_s=mm["gflop"] / seconds, shape=mm["shape"]))
    _common.progress(config, f"matmul {impl}: {rows[-1]['gflop_per_s']:.1f} "
                             f"GFLOP/s, load {rows[-1]['load_avg_1m']:.2f}")
  extra = {"step_metrics_first": {k: float(v) for k, v in step0.items()},
           "collect_metrics": {k: float(v) for k, v in cmetrics0.items()},
           "learn_metrics": {k: float(v) for k, v in lmetrics0.items()}}
  return rows, extra


def matmul_calls(config, exp) -> dict[str, dict[str, Any]]:
  """The reference matmuls, jitted fp32, as thunks to time with the rest.

  Returns:
    impl -> ``call`` (a thunk running ``number`` matmuls, blocking),
    ``number``, ``gflop`` (of one matmul) and ``shape``.
  """
  cfg = exp.model_cfg
  n = config.matmul_size
  m = config.num_prompts * config.group_size * config.max_new_tokens
  d, f = cfg.d_model, cfg.mlp_dim
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  mm = jax.jit(lambda x, w: x @ w)
  operands = {
      "square": (jax.random.normal(k1, (n, n), jnp.float32),
                 jax.random.normal(k2, (n, n), jnp.float32) / n ** 0.5,
                 f"{n}×{n}×{n}", 2 * n ** 3),
      "learner_gemm": (jax.random.normal(k3, (m, d), jnp.float32),
                       cfg.init_std * jax.random.normal(
                           k2, (d, f), jnp.float32),
                       f"{m}×{d}×{f}", 2 * m * d * f),
  }
  out = {}
  for impl, (x, w, shape, flops) in operands.items():
    number = calls_per_sample(lambda x=x, w=w: mm(x, w).block_until_ready(),
                              config.matmul_sample_s)

    def call(x=x, w=w, number=number):
      for _ in range(number):
        y = mm(x, w)
      y.block_until_ready()

    out[impl] = {"call": call, "number": number, "gflop": flops / 1e9,
                 "shape": shape}
  return out


def headline(rows: list[dict[str, Any]], config) -> dict[str, Any]:
  """The figures the benchmark is about, with the target."""
  step = _common.get_row(rows, "step", "step")
  collect = _common.get_row(rows, "collect", "step")
  learn = _common.get_row(rows, "learn", "step")
  rollout = _common.get_row(rows, "rollout", "sampler")
  square = _common.get_row(rows, "matmul", "square")
  gemm = _common.get_row(rows, "matmul", "learner_gemm")
  halves = collect["seconds"] + learn["seconds"]
  return {
      "step_s": step["seconds"],
      "step_min_s": step["min_s"],
      "step_load_avg_1m": step["load_avg_1m"],
      "target_step_s": config.target_step_s,
      "meets_target": step["seconds"] <= config.target_step_s,
      "step_compile_s": step["lower_s"] + step["compile_s"],
      "step_warmup_s": step["warmup_s"],
      "collect_s": collect["seconds"],
      "learn_s": learn["seconds"],
      "rollout_s": rollout["seconds"],
      "collect_share": collect["seconds"] / halves,
      "learn_share": learn["seconds"] / halves,
      "dominant_half": ("collect" if collect["seconds"] >= learn["seconds"]
                        else "learn"),
      "sampler_valid_tokens_per_s": collect["valid_tokens_per_s"],
      "sampler_slots_per_s": collect["slots_per_s"],
      "learner_tokens_per_s": learn["slots_per_s"],
      "step_gflop": step["gflop"],
      "step_gflop_per_s": step["gflop_per_s"],
      "step_nominal_gflop": step["nominal_gflop"],
      "step_nominal_gflop_per_s": step["nominal_gflop_per_s"],
      "matmul_gflop_per_s": square["gflop_per_s"],
      "learner_gemm_gflop_per_s": gemm["gflop_per_s"],
      "fraction_of_square_matmul": round_fraction(step, square),
      "fraction_of_learner_gemm": round_fraction(step, gemm),
      "nominal_fraction_of_square_matmul": round_fraction(
          step, square, "nominal_gflop"),
  }


def run_benchmark(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs every measurement; returns ``{"metadata", "rows", ...}``.

  Args:
    config: from ``configs/bench_step.py``.

  Returns:
    A JSON-serialisable dict: ``metadata``, ``rows`` (one per
    measurement), ``checks`` (all passed; a failing one raises),
    ``headline`` and ``metrics`` (the step's training metrics, as a check
    that it ran what it should).
  """
  start = time.perf_counter()
  load_start = _common.load_avg()
  c = experiment_config(config)
  exp = build_lib.build(c)
  meta = metadata(config, c, exp)
  meta["load_avg_1m_start"] = load_start
  checks = []
  rows, metrics = bench_step(config, c, exp, checks)
  square = _common.get_row(rows, "matmul", "square")
  for r in rows:
    r["fraction_of_matmul"] = round_fraction(r, square)
  meta["load_avg_1m_end"] = _common.load_avg()
  meta["total_time_s"] = time.perf_counter() - start
  return {"metadata": meta, "rows": rows, "checks": checks,
          "headline": headline(rows, config), "metrics": metrics}


# --------------------------------------------------------------------------
# Output.


def format_table(rows: list[dict[str, Any]]) -> str:
  """The results as a markdown table."""
  lines = ["| measurement | what | shape | ms (median) | compile s | "
           "first call s | tokens | valid tok/s | slot tok/s | GFLOP | "
           "GFLOP/s | of matmul | load avg |",
           "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    compile_s = (None if r["compile_s"] is None
                 else r["lower_s"] + r["compile_s"])
    lines.append(
        f"| {r['measurement']} | {r['label']} | {r['shape']} | "
        f"{r['seconds'] * 1e3:,.1f} | {_common.num(compile_s, '.2f')} | "
        f"{_common.num(r['first_call_s'], '.2f')} | "
        f"{r['tokens_counted'] or '—'} | "
        f"{_common.num(r['valid_tokens_per_s'], ',.0f')} | "
        f"{_common.num(r['slots_per_s'], ',.0f')} | "
        f"{_common.num(r['gflop'], '.2f')} | "
        f"{_common.num(r['gflop_per_s'], '.1f')} | "
        f"{_common.num(r['fraction_of_matmul'], '.0%')} | "
        f"{r['load_avg_1m']:.2f} |")
  return "\n".join(lines)


def format_summary(results: dict[str, Any]) -> str:
  """The headline, the checks and the run time, as text."""
  h, meta = results["headline"], results["metadata"]
  step = _common.get_row(results["rows"], "step", "step")
  learn = _common.get_row(results["rows"], "learn", "step")
  collect = _common.get_row(results["rows"], "collect", "step")
  verdict = "meets" if h["meets_target"] else "MISSES"
  lines = [f"Headline ({meta['model']['name']}, "
           f"{meta['model']['num_params']:,} params, {step['shape']}):"]
  lines.append(
      f"  whole step: {h['step_s']:.3f} s (median of "
      f"{len(step['samples_s'])}, fastest {h['step_min_s']:.3f} s, load "
      f"{h['step_load_avg_1m']:.2f}; {verdict} the target ≤ "
      f"{h['target_step_s']:g} s); compile {h['step_compile_s']:.1f} s, "
      f"warm-up {h['step_warmup_s']:.1f} s")
  lines.append(
      f"  halves: collect {h['collect_s']:.3f} s ({h['collect_share']:.0%}, "
      f"load {collect['load_avg_1m']:.2f}), learn {h['learn_s']:.3f} s "
      f"({h['learn_share']:.0%}, load {learn['load_avg_1m']:.2f}); bare "
      f"sampler {h['rollout_s']:.3f} s")
  lines.append(
      f"  sampler {h['sampler_valid_tokens_per_s']:,.0f} valid / "
      f"{h['sampler_slots_per_s']:,.0f} slot tok/s; learner "
      f"{h['learner_tokens_per_s']:,.0f} prompt+completion tok/s")
  lines.append(
      f"  achieved {h['step_gflop_per_s']:.1f} GFLOP/s executed "
      f"({h['step_gflop']:.1f} GFLOP), {h['step_nominal_gflop_per_s']:.1f} "
      f"nominal ({h['step_nominal_gflop']:.1f} GFLOP = 2N·BGT + "
      f"6N·BG(P+T)); per round, {h['fraction_of_square_matmul']:.0%} "
      f"(nominal {h['nominal_fraction_of_square_matmul']:.0%}) of the "
      f"square matmul (median {h['matmul_gflop_per_s']:.1f} GFLOP/s), "
      f"{h['fraction_of_learner_gemm']:.0%} of the learner GEMM")
  m = results["metrics"]["step_metrics_first"]
  lines.append(
      f"Step metrics (first step): reward {m['reward']:.3f}, completion "
      f"length {m['completion_length']:.1f}, truncated {m['truncated']:.0%}, "
      f"grad norm {m['grad_norm']:.3g}.")
  lines.append(f"Correctness: {len(results['checks'])} checks passed.")
  lines.append(_common.machine_summary(meta))
  return "\n".join(lines)


def run_and_report(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the benchmark, prints the table and summary, writes the JSON."""
  return _common.run_and_report(config, run_benchmark, format_table,
                                format_summary)


if __name__ == "__main__":
  _common.run_main(DEFAULT_CONFIG_PATH, run_and_report)
