"""From an experiment config to checked, ready-to-jit pieces.

Every name and size in the config is checked here, before anything is
traced: unknown estimators, losses or tasks list the known names, a group
too small for an estimator, a prompt longer than the model's context, and
so on, each naming the config field to change.
"""

import ast
from typing import Any, Callable, NamedTuple

import optax

from jaxrl_group import advantages
from jaxrl_group import losses
from jaxrl_group import models
from jaxrl_group import tasks
from jaxrl_group.train import context as context_lib
from jaxrl_group.train import step as step_lib


class ConfigError(ValueError):
  """An experiment config field has an invalid value."""


class Experiment(NamedTuple):
  """The pieces a run is assembled from."""
  model_cfg: models.ModelConfig
  task: tasks.ArithmeticTask
  verify: Any
  sampler: step_lib.SamplerSettings
  adv_tx: advantages.AdvantageTransform
  adv_requires: tuple[str, ...]
  adv_input: str
  objective: Any
  rl_optimizer: optax.GradientTransformation
  sft_optimizer: optax.GradientTransformation
  # Learning rate as a function of the optimizer's update count.
  rl_schedule: Callable[[Any], Any]
  sft_schedule: Callable[[Any], Any]
  needs_ref_params: bool
  kl_on: bool
  entropy_on: bool


def parse_kwargs(text: str, field: str) -> dict[str, Any]:
  """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (Python literals, else strings)."""
  out = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    if "=" not in item:
      raise ConfigError(f"{field}: expected 'key=value' items separated by "
                        f"commas, got {item!r}.")
    k, v = (s.strip() for s in item.split("=", 1))
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return out


def _model_config(c) -> models.ModelConfig:
  m = c.model.to_dict()
  name = m.pop("name")
  try:
    return models.get_model_config(name, **m)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from e


def _task(c) -> tasks.ArithmeticTask:
  t = c.task.to_dict()
  name = t.pop("name")
  try:
    return tasks.make_task(name, **t)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.task: {e}") from e


def _advantage(c, group_size: int):
  names = [n.strip() for n in c.advantage.name.split(",") if n.strip()]
  if not names:
    raise ConfigError("config.advantage.name is empty; name an estimator, "
                      "e.g. 'grpo'. Known: "
                      f"{', '.join(sorted(advantages.REGISTRY))}.")
  for n in names:
    if n not in advantages.REGISTRY:
      raise ConfigError(
          f"config.advantage.name: unknown advantage estimator {n!r}; known "
          f"names: {', '.join(sorted(advantages.REGISTRY))}.")
  kwargs = parse_kwargs(c.advantage.kwargs, "config.advantage.kwargs")
  per_name = {n: {} for n in names}
  for k, v in kwargs.items():
    if "." in k:
      n, k = k.split(".", 1)
      if n not in per_name:
        raise ConfigError(f"config.advantage.kwargs: {n!r} is not in the "
                          f"chain {names}.")
      per_name[n][k] = v
    elif len(names) == 1:
      per_name[names[0]][k] = v
    else:
      raise ConfigError(f"config.advantage.kwargs: with a chain, write "
                        f"'name.{k}={v}' to say which estimator gets it.")
  preset = c.advantage.preset or None
  txs, requires = [], []
  for i, n in enumerate(names):
    info = advantages.info(n)
    if group_size < info.min_group_size:
      raise ConfigError(
          f"config.sampler.group_size={group_size} is too small for "
          f"advantage estimator {n!r}, which needs G >= "
          f"{info.min_group_size}.")
    if i > 0 and info.input_name == "rewards_BxGxK":
      raise ConfigError(f"config.advantage.name: {n!r} takes reward "
                        "components and must come first in a chain.")
    try:
      use_preset = preset if preset and n in advantages.PRESETS.get(
          preset, {}) else None
      if preset and preset not in advantages.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: "
                         f"{', '.join(sorted(advantages.PRESETS))}.")
      txs.append(advantages.get(n, preset=use_preset, **per_name[n]))
    except (ValueError, TypeError) as e:
      raise ConfigError(f"config.advantage ({n}): {e}") from e
    requires.extend(r for r in info.requires if r not in requires)
  missing = sorted(set(requires) - set(context_lib.SUPPORTED))
  if missing:
    raise ConfigError(f"config.advantage.name: the train step cannot "
                      f"provide {missing} needed by {names}.")
  tx = txs[0] if len(txs) == 1 else advantages.named_chain(
      *zip(names, txs))
  return tx, tuple(requires), advantages.info(names[0]).input_name


def _optimizer(lr, warmup, total, o):
  """``(optimizer, schedule)``; ``warmup`` and ``total`` count updates."""
  if o.schedule == "constant":
    sched = lr
    if warmup:
      sched = optax.join_schedules(
          [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)],
          [warmup])
  elif o.schedule == "cosine":
    # At least one step of each part (a phase with 0 steps never uses it).
    warmup = max(warmup, 1)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup,
                                               max(total, warmup + 1))
  else:
    raise ConfigError(f"config.optim.schedule must be 'constant' or "
                      f"'cosine', got {o.schedule!r}.")
  if o.name == "adamw":
    opt = optax.adamw(sched, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  elif o.name == "adam":
    opt = optax.adam(sched, b1=o.b1, b2=o.b2)
  elif o.name == "sgd":
    opt = optax.sgd(sched)
  else:
    raise ConfigError(f"config.optim.name must be one of 'adamw', 'adam', "
                      f"'sgd', got {o.name!r}.")
  if o.max_grad_norm:
    opt = optax.chain(optax.clip_by_global_norm(o.max_grad_norm), opt)
  return opt, sched if callable(sched) else optax.constant_schedule(sched)


def make_rl_step(c, exp: Experiment,
                 batch_constraint: Callable | None = None) -> Callable:
  """The RL ``train_step`` of a config and its built :class:`Experiment`."""
  return step_lib.make_rl_step(
      model_cfg=exp.model_cfg, sampler=exp.sampler, verify=exp.verify,
      adv_tx=exp.adv_tx, adv_requires=exp.adv_requires,
      adv_input=exp.adv_input, objective=exp.objective,
      optimizer=exp.rl_optimizer, num_iterations=c.loss.num_iterations,
      num_minibatches=c.loss.num_minibatches, kl_coef_on=exp.kl_on,
      entropy_on=exp.entropy_on, context_cfg=c.context,
      batch_constraint=batch_constraint)


def build(c) -> Experiment:
  """Checks the config and builds the experiment's pieces.

  Raises:
    ConfigError: the first invalid field, named, with the fix.
  """
  model_cfg = _model_config(c)
  task = _task(c)
  if model_cfg.vocab_size < tasks.VOCAB_SIZE:
    raise ConfigError(
        f"config.model: vocab_size={model_cfg.vocab_size} is smaller than the "
        f"task tokenizer's {tasks.VOCAB_SIZE} ids.")
  s = c.sampler
  for f in ("group_size", "max_new_tokens"):
    if s[f] < 1:
      raise ConfigError(f"config.sampler.{f} must be >= 1, got {s[f]}.")
  if s.max_new_tokens < task.answer_len:
    raise ConfigError(
        f"config.sampler.max_new_tokens={s.max_new_tokens} cannot fit the "
        f"task's longest answer and EOS ({task.answer_len} tokens).")
  if task.prompt_len + s.max_new_tokens > model_cfg.max_seq_len:
    raise ConfigError(
        f"prompt length {task.prompt_len} (config.task.prompt_len) + "
        f"config.sampler.max_new_tokens={s.max_new_tokens} exceeds the "
        f"model's context config.model.max_seq_len={model_cfg.max_seq_len}.")
  if task.prompt_len + task.answer_len > model_cfg.max_seq_len:
    raise ConfigError("config.model.max_seq_len is shorter than a "
                      "supervised sequence (prompt + answer).")
  if s.temperature <= 0:
    raise ConfigError(f"config.sampler.temperature must be > 0, got "
                      f"{s.temperature}.")
  if not 0 < s.top_p <= 1:
    raise ConfigError(f"config.sampler.top_p must lie in (0, 1], got "
                      f"{s.top_p}.")
  sampler = step_lib.SamplerSettings(
      group_size=s.group_size, max_new_tokens=s.max_new_tokens,
      temperature=float(s.temperature), top_p=float(s.top_p),
      top_k=int(s.top_k))
  verify = tasks.make_verifier(correct_weight=c.reward.correct_weight,
                               format_weight=c.reward.format_weight)
  adv_tx, requires, adv_input = _advantage(c, s.group_size)

  l = c.loss
  skw = parse_kwargs(l.surrogate_kwargs, "config.loss.surrogate_kwargs")
  if l.surrogate == "ppo_clip":
    skw = {"eps_low": l.clip_eps, "eps_high": l.clip_eps, **skw}
  try:
    objective = losses.make_objective({
        "surrogate": l.surrogate, "surrogate_kwargs": skw,
        "aggregation": l.aggregation, "kl_coef": l.kl_coef,
        "kl_estimator": l.kl_estimator, "entropy_coef": l.entropy_coef,
        "norm_constant": (float(s.max_new_tokens)
                          if l.aggregation == "seq_mean_token_sum_norm"
                          else None)})
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from e
  for f in ("num_iterations", "num_minibatches"):
    if l[f] < 1:
      raise ConfigError(f"config.loss.{f} must be >= 1, got {l[f]}.")
  if c.rl.prompts_per_step % l.num_minibatches:
    raise ConfigError(
        f"config.rl.prompts_per_step={c.rl.prompts_per_step} must be a "
        f"multiple of config.loss.num_minibatches={l.num_minibatches}.")
  for f, b in (("rl.prompts_per_step", c.rl.prompts_per_step),
               ("sft.batch_size", c.sft.batch_size)):
    if b < 1:
      raise ConfigError(f"config.{f} must be >= 1, got {b}.")
  # Warm-up and decay are set in RL steps; each step makes
  # num_iterations x num_minibatches optimizer updates.
  updates = l.num_iterations * l.num_minibatches
  rl_opt, rl_sched = _optimizer(c.optim.lr, c.optim.warmup_steps * updates,
                                c.rl.steps * updates, c.optim)
  sft_opt, sft_sched = _optimizer(c.sft.lr, c.sft.warmup_steps, c.sft.steps,
                                  c.optim)
  kl_on = l.kl_coef != 0
  return Experiment(
      model_cfg=model_cfg, task=task, verify=verify, sampler=sampler,
      adv_tx=adv_tx, adv_requires=requires, adv_input=adv_input,
      objective=objective, rl_optimizer=rl_opt, sft_optimizer=sft_opt,
      rl_schedule=rl_sched, sft_schedule=sft_sched,
      needs_ref_params=kl_on or context_lib.needs_ref_params(requires),
      kl_on=kl_on, entropy_on=l.entropy_coef != 0)
