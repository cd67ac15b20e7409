"""Pure train steps: GRPO-style RL, supervised warm start, and greedy evaluation.

``make_rl_step`` composes the sampler, a verifier, an advantage transform and
an objective from ``jaxrl_group.losses`` into one pure function
``train_step(state, batch) -> (state, metrics)``; everything, sampling
included, runs inside one compiled program. ``num_iterations`` PPO epochs
(optionally ``num_minibatches`` optimizer steps each) reuse the sampler's
log-probabilities as the behaviour policy. ``on_device_steps`` wraps any step
in a ``lax.scan`` so many steps run without returning to Python.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrl_group import losses
from jaxrl_group import models
from jaxrl_group import sampling
from jaxrl_group import tasks
from jaxrl_group.train import context as context_lib
from jaxrl_group.train.state import TrainState

Metrics = dict[str, jax.Array]


class SamplerSettings(NamedTuple):
  """How rollouts are drawn (static sizes; the knobs are compiled in)."""
  group_size: int
  max_new_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  eos_ids: tuple[int, ...] = (tasks.EOS_ID,)
  pad_id: int = tasks.PAD_ID


def make_rollout_fn(model_cfg, s: SamplerSettings, *, greedy: bool = False,
                    group_size: int | None = None) -> Callable:
  """``rollout(params, batch, key) -> Rollout`` for a ``TaskBatch``."""

  def rollout(params, batch, key):
    return sampling.sample(
        params, model_cfg, batch.prompts_BxP, batch.prompt_lengths_B, key,
        group_size=group_size or s.group_size,
        max_new_tokens=s.max_new_tokens, eos_ids=s.eos_ids,
        temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
        greedy=greedy, pad_id=s.pad_id)

  return rollout


def _deferred_values(metrics) -> Metrics:
  return {k: v.value if isinstance(v, losses.Deferred) else v
          for k, v in metrics.items()}


def _take_rows(tree, start, size):
  """Rows ``[start, start + size)`` of every leaf (the leading B axis)."""
  return jax.tree.map(
      lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=0), tree)


def make_rl_step(*, model_cfg: models.ModelConfig, sampler: SamplerSettings,
                 verify: Callable, adv_tx, adv_requires: tuple[str, ...],
                 adv_input: str, objective: Callable, optimizer,
                 num_iterations: int = 1, num_minibatches: int = 1,
                 kl_coef_on: bool = False, entropy_on: bool = False,
                 context_cfg: Any = None,
                 batch_constraint: Callable | None = None) -> Callable:
  """Builds the RL ``train_step(state, batch) -> (state, metrics)``.

  Per step: sample G completions of every prompt (keys from
  ``fold_in(state.key, state.step)``), verify them, compute advantages with
  ``adv_tx`` (feeding the context its estimators require), then run
  ``num_iterations`` epochs of ``num_minibatches`` optimizer steps on the
  objective, with the sampler's log-probabilities as the old policy.

  Args:
    model_cfg: the policy's shape.
    sampler: rollout settings.
    verify: ``(tokens_BxGxT, mask_BxGxT, answers_B) -> (rewards_BxG,
      metrics)`` with ``correct`` and ``well_formed`` metrics.
    adv_tx: an ``AdvantageTransform``.
    adv_requires: the context keys ``adv_tx`` reads.
    adv_input: ``"rewards_BxG"`` or ``"rewards_BxGxK"`` (reward components
      ``[correct, well_formed]``, for GDPO).
    objective: from ``losses.make_objective``.
    optimizer: an optax ``GradientTransformation``.
    num_iterations: PPO epochs over each rollout batch.
    num_minibatches: optimizer steps per epoch (B must divide evenly).
    kl_coef_on: compute reference log-probs (``state.ref_params``).
    entropy_on: compute the policy's token entropy for the objective.
    context_cfg: options of :mod:`jaxrl_group.train.context`.
    batch_constraint: optional function placing a batch pytree's leading
      axis on the mesh's batch axes (``with_sharding_constraint``).

  Returns:
    The pure step function.
  """
  rollout_fn = make_rollout_fn(model_cfg, sampler)
  greedy_fn = make_rollout_fn(model_cfg, sampler, greedy=True, group_size=1)
  context_fn = context_lib.make_context_fn(
      adv_requires, model_cfg=model_cfg, verify=verify,
      rollout_fn=rollout_fn, greedy_fn=greedy_fn, context_cfg=context_cfg)
  constrain = batch_constraint or (lambda x: x)
  tau = sampler.temperature

  def completion_logits(params, batch_mb, tokens_BxGxT):
    first, cache = models.prefill(params, model_cfg, batch_mb.prompts_BxP,
                                  batch_mb.prompt_lengths_B)
    return context_lib.policy_logits(params, model_cfg, cache, first,
                                     tokens_BxGxT)

  def loss_fn(params, mb, key):
    logits = completion_logits(params, mb["batch"], mb["tokens"])
    logp = losses.token_logprobs(logits, mb["tokens"], temperature=tau)
    entropy = (losses.entropy_from_logits(logits, temperature=tau)
               if entropy_on else None)
    loss, metrics = objective(losses.LossInputs(
        logp_BxGxT=logp, old_logp_BxGxT=mb["old_logp"], adv=mb["adv"],
        mask_BxGxT=mb["mask"], ref_logp_BxGxT=mb.get("ref_logp"),
        entropy_BxGxT=entropy, key=key))
    return loss.value, _deferred_values(metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def collect(state: TrainState, batch: tasks.TaskBatch):
    """Sample, verify and compute advantages: ``(data, adv_state, metrics)``."""
    batch = constrain(batch)
    key = jax.random.fold_in(state.key, state.step)
    k_sample, k_ctx, _ = jax.random.split(key, 3)
    rollout = rollout_fn(state.params, batch, k_sample)
    rewards_BxG, vmetrics = verify(rollout.tokens_BxGxT, rollout.mask_BxGxT,
                                   batch.answers_B)
    value_BxG, ok_BxG = tasks.parse_answer(rollout.tokens_BxGxT,
                                           rollout.mask_BxGxT)
    vmetrics = dict(vmetrics, answer_ids=jnp.where(ok_BxG, value_BxG, -1))

    needs_cache = bool(set(adv_requires) & set(context_lib.NEEDS_LOGITS))
    first = cache = None
    if needs_cache:
      first, cache = models.prefill(state.params, model_cfg,
                                    batch.prompts_BxP, batch.prompt_lengths_B)
    ctx = context_fn(state=state, batch=batch, rollout=rollout,
                     verifier_metrics=vmetrics, prompt_cache=cache,
                     first_logits_BxV=first, key=k_ctx)
    if adv_input == "rewards_BxGxK":
      adv_in = jnp.stack([vmetrics["correct"], vmetrics["well_formed"]], -1)
    else:
      adv_in = rewards_BxG
    adv, adv_state = adv_tx.update(adv_in, state.adv_state, **ctx)
    adv = jax.lax.stop_gradient(adv)

    data = {"batch": batch, "tokens": rollout.tokens_BxGxT,
            "old_logp": rollout.logp_BxGxT, "adv": adv,
            "mask": rollout.mask_BxGxT}
    if kl_coef_on:
      ref_logits = completion_logits(state.ref_params, batch,
                                     rollout.tokens_BxGxT)
      data["ref_logp"] = jax.lax.stop_gradient(losses.token_logprobs(
          ref_logits, rollout.tokens_BxGxT, temperature=tau))
    metrics = {
        "reward": jnp.mean(rewards_BxG),
        "accuracy": jnp.mean(vmetrics["correct"]),
        "well_formed": jnp.mean(vmetrics["well_formed"]),
        "completion_length": jnp.mean(rollout.lengths_BxG.astype(
            jnp.float32)),
        "truncated": jnp.mean(rollout.truncated_BxG.astype(jnp.float32)),
        "adv_mean": jnp.mean(adv),
        "adv_abs": jnp.mean(jnp.abs(adv)),
        "solved_groups": jnp.mean(jnp.all(vmetrics["correct"] > 0, -1)),
        "unsolved_groups": jnp.mean(jnp.all(vmetrics["correct"] == 0, -1)),
        "sampled_tokens": jnp.sum(rollout.mask_BxGxT.astype(jnp.float32)),
    }
    return data, adv_state, metrics

  def learn(state: TrainState, data):
    """``num_iterations`` x ``num_minibatches`` optimizer steps on ``data``."""
    k_loss = jax.random.split(jax.random.fold_in(state.key, state.step),
                              3)[2]
    b = data["tokens"].shape[0]
    mb_size = b // num_minibatches

    def update(carry, i):
      params, opt_state = carry
      mb = _take_rows(data, (i % num_minibatches) * mb_size, mb_size)
      (_, lmetrics), grads = grad_fn(params, mb, jax.random.fold_in(k_loss, i))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      lmetrics = dict(lmetrics, grad_norm=optax.tree.norm(grads))
      return (params, opt_state), lmetrics

    (params, opt_state), lmetrics = jax.lax.scan(
        update, (state.params, state.opt_state),
        jnp.arange(num_iterations * num_minibatches))
    return params, opt_state, jax.tree.map(jnp.mean, lmetrics)

  def train_step(state: TrainState, batch: tasks.TaskBatch
                 ) -> tuple[TrainState, Metrics]:
    data, adv_state, metrics = collect(state, batch)
    params, opt_state, lmetrics = learn(state, data)
    new_state = state._replace(step=state.step + 1, params=params,
                               opt_state=opt_state, adv_state=adv_state)
    return new_state, {**metrics, **lmetrics}

  # The two halves, for benchmarks and for host-side verifiers in between.
  train_step.collect = collect
  train_step.learn = learn
  return train_step


def make_sft_step(*, model_cfg: models.ModelConfig, optimizer,
                  batch_constraint: Callable | None = None) -> Callable:
  """Builds a supervised ``sft_step(state, batch) -> (state, metrics)``.

  Next-token cross-entropy on the gold completions of a ``TaskBatch`` (the
  prompt is context only), averaged over completion tokens.
  """
  constrain = batch_constraint or (lambda x: x)

  def loss_fn(params, tokens_BxS, loss_mask_BxS):
    inputs = tokens_BxS[:, :-1]
    logits = models.forward(params, model_cfg, inputs,
                            mask_BxS=inputs != tasks.PAD_ID)
    logp = losses.token_logprobs(logits, tokens_BxS[:, 1:])
    m = loss_mask_BxS[:, 1:].astype(jnp.float32)
    nll = -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)
    pred = jnp.argmax(logits, -1) == tokens_BxS[:, 1:]
    token_acc = jnp.sum(pred * m) / jnp.maximum(jnp.sum(m), 1.0)
    return nll, {"token_accuracy": token_acc}

  def sft_step(state: TrainState, batch: tasks.TaskBatch
               ) -> tuple[TrainState, Metrics]:
    batch = constrain(batch)
    tokens, loss_mask = tasks.sft_batch(batch)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, tokens, loss_mask)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return state._replace(step=state.step + 1, params=params,
                          opt_state=opt_state), metrics

  return sft_step


def make_eval_fn(model_cfg: models.ModelConfig, sampler: SamplerSettings,
                 verify: Callable) -> Callable:
  """``evaluate(params, batch) -> metrics``: greedy accuracy on a fixed set."""
  greedy_fn = make_rollout_fn(model_cfg, sampler, greedy=True, group_size=1)

  def evaluate(params, batch: tasks.TaskBatch) -> Metrics:
    r = greedy_fn(params, batch, jax.random.key(0))
    rewards, vm = verify(r.tokens_BxGxT, r.mask_BxGxT, batch.answers_B)
    return {"accuracy": jnp.mean(vm["correct"]),
            "reward": jnp.mean(rewards),
            "well_formed": jnp.mean(vm["well_formed"]),
            "completion_length": jnp.mean(r.lengths_BxG.astype(jnp.float32))}

  return evaluate


def with_batches(step: Callable, sample_batch: Callable) -> Callable:
  """``state -> (state, metrics)``: draws the step's batch on device.

  ``sample_batch(key)`` gets ``fold_in(fold_in(state.key, step), 1)``, a
  stream independent of the step's own sampling keys, so a resumed run sees
  the same batches as an uninterrupted one.
  """

  def run(state: TrainState):
    data_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                                  1)
    return step(state, sample_batch(data_key))

  return run


def on_device_steps(step: Callable, num_steps: int) -> Callable:
  """``state -> (state, stacked metrics)``: ``num_steps`` steps in a scan."""

  def run(state):
    return jax.lax.scan(lambda s, _: step(s), state, None, length=num_steps)

  return run
