"""The host loop of an experiment: SFT warm start, then RL, with resume.

Both phases run compiled steps that draw their batches on device; the host
only decides when to evaluate, log and checkpoint. Many steps run as one
``lax.scan`` call (``rl.steps_per_call``). A run's checkpoints live under
``<workdir>/checkpoints/{sft,rl}``; starting again in the same workdir
resumes from the newest one and reproduces the uninterrupted run's metrics.
"""

import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages
from jaxrl_group import models
from jaxrl_group import parallel
from jaxrl_group.train import build as build_lib
from jaxrl_group.train import metrics as metrics_lib
from jaxrl_group.train import step as step_lib
from jaxrl_group.train.build import build
from jaxrl_group.train.build import ConfigError
from jaxrl_group.train.checkpoint import Checkpointer
from jaxrl_group.train.state import TrainState


def make_mesh_and_rules(c):
  """The mesh of ``config.mesh`` and the logical-axis rules it implies."""
  axes = (("data", c.mesh.data), ("fsdp", c.mesh.fsdp),
          ("tensor", c.mesh.tensor))
  n = c.mesh.num_devices
  if not 0 <= n <= jax.device_count():
    raise ConfigError(f"config.mesh.num_devices={n} must lie in [0, "
                      f"{jax.device_count()}] (0 = all devices).")
  devices = jax.devices()[:n] if n else None
  try:
    mesh = parallel.make_mesh(axes, devices=devices)
  except ValueError as e:
    raise ConfigError(f"config.mesh: {e}") from e
  if c.mesh.rules == "dp":
    rules = {k: None for k in parallel.DEFAULT_RULES}
    rules["batch"] = parallel.BATCH_AXES
  elif c.mesh.rules == "fsdp":
    rules = dict(parallel.DEFAULT_RULES)
  else:
    raise ConfigError(f"config.mesh.rules must be 'dp' (replicated "
                      f"parameters) or 'fsdp', got {c.mesh.rules!r}.")
  batch_ways = int(np.prod([mesh.shape[a] for a in parallel.BATCH_AXES
                            if a in mesh.shape]))
  for field, b in (("rl.prompts_per_step", c.rl.prompts_per_step),
                   ("sft.batch_size", c.sft.batch_size),
                   ("eval.size", c.eval.size)):
    if b % batch_ways:
      raise ConfigError(
          f"config.{field}={b} must be a multiple of the {batch_ways} "
          f"devices the batch is split over (config.mesh).")
  return mesh, rules


def batch_constraint(mesh) -> Callable:
  """Places every leaf's leading axis on the mesh's batch axes."""

  def constrain(tree):
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(
            x, parallel.batch_sharding(mesh, x.ndim)), tree)

  return constrain


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


def _shardings(tree):
  return jax.tree.map(lambda x: x.sharding, tree)


class _Phase:
  """Runs one phase's steps in chunks and handles logging and checkpoints."""

  def __init__(self, name, step_fn, state, total, steps_per_call, ckpt,
               writer, progress, evaluate, eval_every, data_state,
               target_accuracy=0.0):
    self.target_accuracy = target_accuracy
    self.name, self.state, self.total = name, state, total
    self.ckpt, self.writer, self.evaluate = ckpt, writer, evaluate
    self.eval_every, self.data_state = eval_every, data_state
    out = (_shardings(state), None)
    self.single = jax.jit(step_fn, donate_argnums=0, out_shardings=out)
    self.scan = jax.jit(step_lib.on_device_steps(step_fn, steps_per_call),
                        donate_argnums=0, out_shardings=out)
    self.steps_per_call = steps_per_call
    self.progress = progress
    self.last_eval = None

  def _boundaries(self, s):
    nxt = [self.total]
    if self.eval_every:
      nxt.append((s // self.eval_every + 1) * self.eval_every)
    if self.ckpt is not None:
      every = self.ckpt_every
      nxt.append((s // every + 1) * every)
    return min(nxt)

  def run(self, ckpt_every):
    self.ckpt_every = ckpt_every
    s = int(self.state.step)
    while s < self.total:
      n = min(self.steps_per_call, self._boundaries(s) - s)
      if n == self.steps_per_call and n > 1:
        self.state, m = self.scan(self.state)
        m = jax.device_get(m)
        rows = [{k: v[i] for k, v in m.items()} for i in range(n)]
      else:
        rows = []
        for _ in range(n):
          self.state, m = self.single(self.state)
          rows.append(m)
        rows = jax.device_get(rows)
      for i, row in enumerate(rows):
        vals = {f"{self.name}/{k}": float(v) for k, v in row.items()}
        if not all(np.isfinite(v) for v in vals.values()):
          bad = sorted(k for k, v in vals.items() if not np.isfinite(v))
          raise FloatingPointError(
              f"{self.name} step {s + i + 1}: non-finite metrics {bad}.")
        self.writer.write_scalars(s + i + 1, vals)
      s += n
      last = rows[-1]
      post = {k: float(last[k]) for k in ("reward", "accuracy", "loss")
              if k in last}
      if self.eval_every and (s % self.eval_every == 0 or s == self.total):
        self.last_eval = self.evaluate(self.state.params)
        self.writer.write_scalars(
            s, {f"{self.name}/eval_{k}": v for k, v in self.last_eval.items()})
        post["eval_acc"] = self.last_eval["accuracy"]
        if self.target_accuracy and (
            self.last_eval["accuracy"] >= self.target_accuracy):
          self.total = s  # stop here; saved below as the final step
      if self.progress is not None:
        self.progress.update(n, **post)
      if self.ckpt is not None:
        done = s == self.total
        self.ckpt.save(s, self.state, data_state=dict(
            self.data_state, step=s, done=done), force=done)
    return self.state


def run(c, workdir: str, *, stream=sys.stderr) -> dict[str, Any]:
  """Runs (or resumes) the experiment of config ``c`` in ``workdir``.

  Returns:
    The summary: held-out greedy accuracy after SFT and at the end, the
    improvement, wall times, and the step counts.
  """
  t_start = time.perf_counter()
  exp = build(c)
  mesh, rules = make_mesh_and_rules(c)
  os.makedirs(workdir, exist_ok=True)
  cfg = exp.model_cfg
  constrain = batch_constraint(mesh)
  param_sh = parallel.tree_shardings(models.param_shapes(cfg),
                                     models.param_axes(cfg), mesh, rules)
  repl = parallel.replicated(mesh)
  root = jax.random.key(c.seed)

  writers = [metrics_lib.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
  if c.log.tensorboard:
    writers.append(metrics_lib.TensorBoardWriter(os.path.join(workdir, "tb")))
  writer = metrics_lib.MultiWriter(writers)

  eval_batch = jax.device_put(exp.task.eval_set(c.eval.seed, c.eval.size))
  eval_batch = jax.tree.map(
      lambda x: jax.device_put(x, parallel.batch_sharding(mesh, x.ndim)),
      eval_batch)
  eval_jit = jax.jit(step_lib.make_eval_fn(cfg, exp.sampler, exp.verify))

  def evaluate(params):
    return {k: float(v) for k, v in jax.device_get(
        eval_jit(params, eval_batch)).items()}

  ck_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  make_ck = lambda sub: Checkpointer(  # noqa: E731
      os.path.join(ck_dir, sub), max_to_keep=c.checkpoint.max_to_keep,
      save_interval_steps=c.checkpoint.every)
  sft_ck, rl_ck = make_ck("sft"), make_ck("rl")
  resume = c.checkpoint.resume

  def fresh_state(params, optimizer, adv_tx, key, ref_params=None):
    opt_state = jax.jit(optimizer.init)(params)
    spec = jax.ShapeDtypeStruct((c.rl.prompts_per_step,
                                 exp.sampler.group_size), jnp.float32)
    adv_state = (advantages.EmptyState() if adv_tx is None
                 else adv_tx.init(spec))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=opt_state, adv_state=adv_state, key=key,
                       ref_params=ref_params)
    # Leaves made without a mesh sharding (scalars such as Adam's count)
    # are replicated over the mesh, so the jitted step sees one mesh.
    return jax.tree.map(
        lambda x: x if isinstance(x.sharding, jax.sharding.NamedSharding)
        else jax.device_put(x, repl), state)

  init_params = jax.jit(lambda k: models.init_params(cfg, k),
                        out_shardings=param_sh)
  sample = lambda bs: (lambda k: exp.task.sample(k, bs))  # noqa: E731
  summary = {}
  times = {}
  rl_resume = resume and rl_ck.latest_step() is not None
  progress = None

  # Phase 1: supervised warm start.
  if not rl_resume:
    sft_step = step_lib.with_batches(
        step_lib.make_sft_step(model_cfg=cfg, optimizer=exp.sft_optimizer,
                               batch_constraint=constrain),
        sample(c.sft.batch_size))
    state = fresh_state(init_params(jax.random.fold_in(root, 0)),
                        exp.sft_optimizer, None, jax.random.fold_in(root, 1))
    sft_total = c.sft.steps
    if resume and sft_ck.latest_step() is not None:
      state, sft_data = sft_ck.restore(_abstract(state))
      if sft_data.get("done"):  # it had stopped at its target accuracy
        sft_total = int(state.step)
    if c.log.progress:
      progress = metrics_lib.ProgressBar(c.sft.steps, desc="sft",
                                         stream=stream)
      progress.update(int(state.step))
    t0 = time.perf_counter()
    phase = _Phase("sft", sft_step, state, sft_total,
                   max(1, c.rl.steps_per_call), sft_ck, writer, progress,
                   evaluate, c.sft.eval_every, {"phase": "sft"},
                   target_accuracy=c.sft.target_accuracy)
    state = phase.run(c.checkpoint.every)
    if progress is not None:
      progress.close()
    times["sft_s"] = time.perf_counter() - t0
    sft_eval = evaluate(state.params)
    sft_params = state.params
    summary["sft_steps"] = int(state.step)
  # Phase 2: RL from the SFT policy.
  rl_step = step_lib.with_batches(
      build_lib.make_rl_step(c, exp, batch_constraint=constrain),
      sample(c.rl.prompts_per_step))
  if rl_resume:
    # The abstract state: shapes from a throwaway init, no compute kept.
    p0 = init_params(jax.random.fold_in(root, 0))
    ref0 = p0 if exp.needs_ref_params else None
    template = fresh_state(p0, exp.rl_optimizer, exp.adv_tx,
                           jax.random.fold_in(root, 2), ref0)
    state, data_state = rl_ck.restore(_abstract(template))
    sft_eval = data_state["sft_eval"]
    summary["sft_steps"] = data_state["sft_steps"]
  else:
    ref = (jax.tree.map(jnp.copy, sft_params) if exp.needs_ref_params
           else None)
    state = fresh_state(sft_params, exp.rl_optimizer, exp.adv_tx,
                        jax.random.fold_in(root, 2), ref)
  if c.log.progress:
    progress = metrics_lib.ProgressBar(c.rl.steps, desc="rl", stream=stream)
    progress.update(int(state.step))
  t0 = time.perf_counter()
  data_state = {"phase": "rl", "sft_eval": sft_eval,
                "sft_steps": summary["sft_steps"]}
  phase = _Phase("rl", rl_step, state, c.rl.steps, c.rl.steps_per_call,
                 rl_ck, writer, progress, evaluate, c.rl.eval_every,
                 data_state)
  state = phase.run(c.checkpoint.every)
  if progress is not None:
    progress.close()
  times["rl_s"] = time.perf_counter() - t0
  final_eval = phase.last_eval or evaluate(state.params)
  sft_ck.wait()
  rl_ck.wait()
  sft_ck.close()
  rl_ck.close()
  writer.close()

  summary.update({
      "task": exp.task.name,
      "advantage": c.advantage.name,
      "model_params": cfg.num_params(),
      "devices": jax.device_count(),
      "eval_size": c.eval.size,
      "sft_accuracy": sft_eval["accuracy"],
      "final_accuracy": final_eval["accuracy"],
      "accuracy_gain": final_eval["accuracy"] - sft_eval["accuracy"],
      "rl_steps": int(state.step),
      **{k: round(v, 2) for k, v in times.items()},
      "wall_s": round(time.perf_counter() - t_start, 2),
  })
  metrics_lib.write_summary(os.path.join(workdir, "summary.txt"), summary)
  if c.log.plot:
    records = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    metrics_lib.plot_curves(
        records, os.path.join(workdir, "curves.png"),
        keys=["sft/loss", "sft/eval_accuracy", "rl/reward",
              "rl/eval_accuracy"],
        title=f"{exp.task.name}: SFT then RL ({c.advantage.name})")
  return summary
