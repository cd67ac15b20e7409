"""The context inputs an advantage estimator reads, computed inside the step.

Estimators declare what they need (``advantages.INFO[name].requires``); the
step computes exactly those, from the rollout, the verifier, a no-gradient
teacher-forced pass, or extra rollouts (greedy, or from the reference
policy). Inputs that this project's synthetic tasks cannot provide for real
get a documented stand-in, named in ``STAND_INS``.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrl_group import models
from jaxrl_group.advantages import _est_oblr_baseline
from jaxrl_group.sampling import Rollout

# Context keys computed from the policy's logits at the sampled tokens.
NEEDS_LOGITS = ("entropy_BxG", "entropy_BxGxT", "sum_pi_sq_BxGxT",
                "score_norm_sq_BxG")
# Context keys that need samples of the reference policy.
NEEDS_REF_ROLLOUT = ("ref_rewards_BxG", "ref_rewards_BxM", "value_prior_B")

# What stands in for inputs that have no real source here.
STAND_INS = {
    "values_BxGxT": "zeros: there is no critic, so GAE reduces to "
                    "discounted returns.",
    "role_ids_BxG": "zeros: one role.",
    "subgroup_ids_BxG": "answer-length bucket: the number of answer digits "
                        "minus the fewest possible, capped at "
                        "context.num_subgroups - 1.",
    "value_prior_B": "the reference policy's success rate on the prompt, "
                     "from its G samples.",
    "first_error_step_BxG": "index of the first answer digit that differs "
                            "from the gold answer (the steps are digits).",
    "num_steps_BxG": "digits of the gold answer.",
    "prompt_ids_B": "a hash of the problem's operands modulo "
                    "context.prompt_id_buckets.",
    "logp_temp_BxGxT": "the sampler's log-probs at the sampling temperature.",
    "is_weights_BxGxT": "ones (on-policy rollouts).",
}

SUPPORTED = (
    "lengths_BxG", "token_mask_BxGxT", "tokens_BxGxT", "old_logp_BxGxT",
    "step", "answer_ids_BxG", "greedy_rewards_B", "ref_rewards_BxG",
    "ref_rewards_BxM", "entropy_BxG", "entropy_BxGxT", "sum_pi_sq_BxGxT",
    "score_norm_sq_BxG") + tuple(STAND_INS)


def policy_logits(params, cfg, prompt_cache: models.PromptCache,
                  first_logits_BxV: jax.Array,
                  tokens_BxGxT: jax.Array) -> jax.Array:
  """Logits ``[B, G, T, V]`` that predicted each completion token."""
  b, g, _ = tokens_BxGxT.shape
  ext = models.extend(params, cfg, prompt_cache, tokens_BxGxT)
  first = jnp.broadcast_to(first_logits_BxV[:, None, None],
                           (b, g, 1, cfg.vocab_size))
  return jnp.concatenate([first, ext[:, :, :-1]], axis=2)


def _masked_mean_t(x_BxGxT, mask_BxGxT):
  m = mask_BxGxT.astype(x_BxGxT.dtype)
  return jnp.sum(x_BxGxT * m, -1) / jnp.maximum(jnp.sum(m, -1), 1)


def first_error_step(tokens_BxGxT, targets_BxA, target_lengths_B):
  """Index of the first answer digit that differs from the gold one."""
  a = targets_BxA.shape[1]
  t = tokens_BxGxT.shape[2]
  if t < a:
    tokens_BxGxT = jnp.pad(tokens_BxGxT, ((0, 0), (0, 0), (0, a - t)))
  digits = target_lengths_B - 1  # without the EOS
  wrong = tokens_BxGxT[:, :, :a] != targets_BxA[:, None, :]
  idx = jnp.arange(a)[None, None]
  wrong &= idx < digits[:, None, None]
  first = jnp.where(wrong, idx, a).min(-1)
  return jnp.minimum(first, digits[:, None]).astype(jnp.int32)


def make_context_fn(requires: tuple[str, ...], *, model_cfg,
                    verify: Callable, rollout_fn: Callable,
                    greedy_fn: Callable, context_cfg: Any):
  """Returns ``context(...) -> dict`` computing exactly ``requires``.

  Args:
    requires: the context keys the advantage chain reads.
    model_cfg: the model's shape.
    verify: ``(tokens, mask, answers) -> (rewards, metrics)``.
    rollout_fn: ``(params, batch, key) -> Rollout`` with G samples.
    greedy_fn: ``(params, batch, key) -> Rollout`` with one greedy sample.
    context_cfg: ``num_subgroups``, ``prompt_id_buckets``, ``ref_samples``.

  Raises:
    ValueError: a required key this step cannot provide.
  """
  missing = sorted(set(requires) - set(SUPPORTED))
  if missing:
    raise ValueError(f"the train step cannot provide context {missing} for "
                     "the advantage estimator; it provides "
                     f"{sorted(SUPPORTED)}.")
  req = set(requires)

  def context(*, state, batch, rollout: Rollout, verifier_metrics,
              prompt_cache, first_logits_BxV, key) -> dict[str, Any]:
    ctx = {}
    mask = rollout.mask_BxGxT
    b, g, t = mask.shape
    if "lengths_BxG" in req:
      ctx["lengths_BxG"] = rollout.lengths_BxG.astype(jnp.float32)
    if "token_mask_BxGxT" in req:
      ctx["token_mask_BxGxT"] = mask
    if "tokens_BxGxT" in req:
      ctx["tokens_BxGxT"] = rollout.tokens_BxGxT
    if "old_logp_BxGxT" in req:
      ctx["old_logp_BxGxT"] = rollout.logp_BxGxT
    if "logp_temp_BxGxT" in req:
      ctx["logp_temp_BxGxT"] = rollout.logp_BxGxT
    if "is_weights_BxGxT" in req:
      ctx["is_weights_BxGxT"] = jnp.ones(mask.shape, jnp.float32)
    if "step" in req:
      ctx["step"] = state.step
    if "answer_ids_BxG" in req:
      ctx["answer_ids_BxG"] = verifier_metrics["answer_ids"]
    if "values_BxGxT" in req:
      ctx["values_BxGxT"] = jnp.zeros(mask.shape, jnp.float32)
    if "role_ids_BxG" in req:
      ctx["role_ids_BxG"] = jnp.zeros((b, g), jnp.int32)
    if "prompt_ids_B" in req:
      ops = batch.operands_BxN.astype(jnp.uint32)
      h = jnp.zeros(ops.shape[:1], jnp.uint32)
      for i in range(ops.shape[1]):
        h = (h * jnp.uint32(1_000_003)) ^ ops[:, i]
      ctx["prompt_ids_B"] = (h % jnp.uint32(
          context_cfg.prompt_id_buckets)).astype(jnp.int32)
    if req & {"first_error_step_BxG", "num_steps_BxG"}:
      ctx["first_error_step_BxG"] = first_error_step(
          rollout.tokens_BxGxT, batch.targets_BxA, batch.target_lengths_B)
      ctx["num_steps_BxG"] = jnp.broadcast_to(
          (batch.target_lengths_B - 1)[:, None], (b, g)).astype(jnp.int32)
    if "subgroup_ids_BxG" in req:
      digits = batch.target_lengths_B - 1
      bucket = jnp.clip(digits - jnp.min(digits), 0,
                        context_cfg.num_subgroups - 1)
      ctx["subgroup_ids_BxG"] = jnp.broadcast_to(
          bucket[:, None], (b, g)).astype(jnp.int32)
    if req & set(NEEDS_LOGITS):
      logits = jax.lax.stop_gradient(policy_logits(
          state.params, model_cfg, prompt_cache, first_logits_BxV,
          rollout.tokens_BxGxT))
      logp_all = jax.nn.log_softmax(logits, axis=-1)
      p_all = jnp.exp(logp_all)
      ent = -jnp.sum(p_all * logp_all, -1)
      sum_pi_sq = jnp.sum(p_all * p_all, -1)
      ctx["entropy_BxGxT"] = jnp.where(mask, ent, 0.0)
      ctx["entropy_BxG"] = _masked_mean_t(ent, mask)
      ctx["sum_pi_sq_BxGxT"] = sum_pi_sq
      if "score_norm_sq_BxG" in req:
        ctx["score_norm_sq_BxG"] = _est_oblr_baseline.score_norm_proxy(
            mask, rollout.logp_raw_BxGxT, sum_pi_sq,
            jnp.ones(mask.shape, jnp.float32))
    k_greedy, k_ref = jax.random.split(key)
    if "greedy_rewards_B" in req:
      greedy = greedy_fn(state.params, batch, k_greedy)
      r, _ = verify(greedy.tokens_BxGxT, greedy.mask_BxGxT, batch.answers_B)
      ctx["greedy_rewards_B"] = r[:, 0]
    if req & set(NEEDS_REF_ROLLOUT):
      if state.ref_params is None:
        raise ValueError("the advantage estimator needs reference-policy "
                         "rollouts but the train state has no ref_params.")
      ref = rollout_fn(state.ref_params, batch, k_ref)
      r, _ = verify(ref.tokens_BxGxT, ref.mask_BxGxT, batch.answers_B)
      ctx["ref_rewards_BxG"] = r
      ctx["ref_rewards_BxM"] = r
      ctx["value_prior_B"] = jnp.mean(r, axis=-1)
    return {k: v for k, v in ctx.items() if k in req}

  return context


def needs_ref_params(requires: tuple[str, ...]) -> bool:
  return bool(set(requires) & set(NEEDS_REF_ROLLOUT))

