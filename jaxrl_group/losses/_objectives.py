"""Objectives beyond the clipped surrogate: SFT, DYPO, BVPO/DPO, HPT.

* :func:`sft_loss`: per-token negative log-likelihood.
* DYPO (Zhu et al., arXiv 2604.08926): :func:`dypo_route` grades prompts,
  :func:`group_alignment_loss` is its pairwise on-policy loss (GAL), and
  :func:`dypo_loss` mixes SFT, GRPO and GAL per prompt.
* BVPO (Zhu et al., arXiv 2510.05095): :func:`dpo_loss`, :func:`bvpo_loss`
  and the MSE-optimal mixing weight :func:`bvpo_optimal_alpha`.
* HPT (Lv et al., "Towards a Unified View of LLM Post-Training"):
  :func:`hpt_switch` gives per-prompt RL / SFT coefficients.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.losses._aggregation import Deferred
from jaxrl_group.losses._aggregation import token_mean

# DYPO prompt categories (dypo_route).
DYPO_EASY = 0  # every valid sample correct: dropped
DYPO_MIXED = 1  # some correct, some not: alpha GRPO + (1 - alpha) GAL
DYPO_HARD = 2  # no valid sample correct: SFT on a teacher solution
DYPO_EMPTY = 3  # no valid sample at all (padding): contributes nothing

DYPO_NORMALIZE = ("all", "kept")
HPT_STRATEGIES = ("switch", "soft")


def _check_prompt_inputs(what: str, rewards_BxG: Any,
                         mask_BxG: Any) -> dict[str, int]:
  sizes = _checks.check_named("rewards_BxG", rewards_BxG, what=what)
  sizes = _checks.check_named("mask_BxG", mask_BxG, sizes, what=what)
  _checks.check_bool("mask_BxG", mask_BxG, what=what)
  return sizes


def _num_correct(rewards_BxG, mask_BxG, threshold):
  """Counts of valid and of correct (reward > threshold) samples, [B]."""
  mask = jnp.asarray(mask_BxG)
  correct = mask & (jnp.asarray(rewards_BxG) > threshold)
  return (jnp.sum(mask, axis=-1, dtype=jnp.int32),
          jnp.sum(correct, axis=-1, dtype=jnp.int32))


# ---------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------


def sft_loss(logp: jax.typing.ArrayLike, mask: jax.typing.ArrayLike
             ) -> tuple[jax.Array, dict[str, Deferred]]:
  """Supervised fine-tuning: the per-token loss ``-log pi(y_t)``.

  Plain maximum likelihood on given targets (teacher solutions,
  demonstrations). Aggregate with any mode of ``aggregate``:
  ``token_mean`` is the usual SFT loss, ``seq_mean_token_sum`` gives
  ``-log pi(y | x)`` per sequence averaged over sequences.

  Args:
    logp: ``[B, G, T]`` (``logp_BxGxT``) or ``[B, T]`` (``logp_BxT``)
      log-probs of the target tokens under the current policy.
    mask: bool of the same shape, valid target tokens.

  Returns:
    ``(loss, metrics)``: ``-logp`` at valid tokens, 0 elsewhere, same shape
    as ``logp``; metrics ``{"sft_nll": token mean of -logp}``.
  """
  what = "sft_loss"
  ndim = jnp.ndim(logp)
  if ndim not in (2, 3):
    raise ValueError(f"{what}: logp must have shape [B, G, T] or [B, T], got "
                     f"shape {jnp.shape(logp)}.")
  suffix = "BxGxT" if ndim == 3 else "BxT"
  sizes = _checks.check_named(f"logp_{suffix}", logp, what=what)
  _checks.check_floating(f"logp_{suffix}", logp, what=what)
  _checks.check_named(f"mask_{suffix}", mask, sizes, what=what)
  _checks.check_bool(f"mask_{suffix}", mask, what=what)
  mask = jnp.asarray(mask)
  loss = jnp.where(mask, -jnp.asarray(logp), 0)
  return loss, {"sft_nll": token_mean(loss, mask)}


# ---------------------------------------------------------------------------
# DYPO
# ---------------------------------------------------------------------------


def dypo_route(rewards_BxG: jax.typing.ArrayLike,
               mask_BxG: jax.typing.ArrayLike, *,
               threshold: float | jax.Array = 0.5) -> jax.Array:
  """DYPO's difficulty grading of each prompt from its rollouts.

  See Zhu et al., DYPO (arXiv 2604.08926). With binary rewards, a sample
  is correct when ``reward > threshold``. Among a prompt's valid samples:
  all correct -> ``DYPO_EASY`` (dropped); none correct -> ``DYPO_HARD``
  (SFT on a teacher solution); otherwise ``DYPO_MIXED`` (GRPO + GAL). A
  prompt with no valid sample is ``DYPO_EMPTY`` (padding; the paper has no
  such case). The paper uses k = 8 rollouts per prompt.

  Args:
    rewards_BxG: rewards, binary in the paper (any numeric dtype).
    mask_BxG: bool, valid samples.
    threshold: a sample is correct when its reward is > threshold
      (0.5 for 0/1 rewards; use 0 for -1/+1 rewards).

  Returns:
    int32 ``[B]`` categories.
  """
  _check_prompt_inputs("dypo_route", rewards_BxG, mask_BxG)
  n, k = _num_correct(rewards_BxG, mask_BxG, threshold)
  category = jnp.where(k == n, DYPO_EASY,
                       jnp.where(k == 0, DYPO_HARD, DYPO_MIXED))
  return jnp.where(n == 0, DYPO_EMPTY, category).astype(jnp.int32)


def group_alignment_loss_per_prompt(
    seq_logp_BxG: jax.typing.ArrayLike,
    seq_ref_logp_BxG: jax.typing.ArrayLike,
    rewards_BxG: jax.typing.ArrayLike,
    mask_BxG: jax.typing.ArrayLike,
    *,
    beta: float | jax.Array = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """DYPO's Group Alignment Loss per prompt: pair sums and pair counts.

  See :func:`group_alignment_loss` for the formula. Returns the sum of
  ``-log sigmoid(beta * d(s, f))`` over each prompt's pairs and the number
  of pairs, so ``total_B / max(pairs_B, 1)`` is the per-prompt L_GAL that
  :func:`dypo_loss` uses.

  Args:
    seq_logp_BxG: sequence log-probs ``sum_t log pi_theta`` (differentiable).
    seq_ref_logp_BxG: the same under the reference policy.
    rewards_BxG: rewards (any numeric dtype); pairs need R(s) > R(f).
    mask_BxG: bool, valid samples.
    beta: beta_GAL (paper: 1); may be traced.

  Returns:
    ``(total_B, pairs_B)``, both ``[B]`` in the dtype of ``seq_logp_BxG``.
  """
  what = "group_alignment_loss"
  sizes = _check_prompt_inputs(what, rewards_BxG, mask_BxG)
  for name, x in (("seq_logp_BxG", seq_logp_BxG),
                  ("seq_ref_logp_BxG", seq_ref_logp_BxG)):
    _checks.check_named(name, x, sizes, what=what)
    _checks.check_floating(name, x, what=what)
  mask = jnp.asarray(mask_BxG)
  logp = jnp.asarray(seq_logp_BxG)
  dtype = logp.dtype
  # Implicit reward log(pi / pi_ref); masked samples are zeroed first so
  # that non-finite padding cannot reach the value or the gradient.
  z = jnp.where(mask, logp - jax.lax.stop_gradient(
      jnp.asarray(seq_ref_logp_BxG, dtype)), 0)
  r = jnp.asarray(rewards_BxG)
  d = z[:, :, None] - z[:, None, :]  # [B, s, f]
  pair = (mask[:, :, None] & mask[:, None, :]
          & (r[:, :, None] > r[:, None, :]))
  loss = jax.nn.softplus(-jnp.asarray(beta, dtype) * d)  # -log sigmoid
  total = jnp.sum(jnp.where(pair, loss, 0), axis=(1, 2))
  return total, jnp.sum(pair, axis=(1, 2)).astype(dtype)


def group_alignment_loss(
    seq_logp_BxG: jax.typing.ArrayLike,
    seq_ref_logp_BxG: jax.typing.ArrayLike,
    rewards_BxG: jax.typing.ArrayLike,
    mask_BxG: jax.typing.ArrayLike,
    *,
    beta: float | jax.Array = 1.0,
) -> Deferred:
  """DYPO's Group Alignment Loss (GAL), a DPO-shaped on-policy pair loss.

  See Zhu et al., DYPO (arXiv 2604.08926):
  ``L_GAL = mean over pairs (s, f) of -log sigmoid(beta * d(s, f))`` with
  ``d = [log pi(y_s) - log pi_ref(y_s)] - [log pi(y_f) - log pi_ref(y_f)]``,
  over all pairs of valid samples of the same prompt with ``R(s) > R(f)``
  (every correct/incorrect pair for binary rewards). Vectorised over
  ``[B, G, G]``. The reference log-probs get no gradient.

  Here the mean runs over all pairs of the batch (the total over the pair
  count); a group with no pair (all rewards equal) adds nothing. DYPO's
  mixture uses the per-prompt mean instead (:func:`dypo_loss`, from
  :func:`group_alignment_loss_per_prompt`).

  Args:
    seq_logp_BxG: sequence log-probs under the current policy.
    seq_ref_logp_BxG: sequence log-probs under the reference policy.
    rewards_BxG: rewards.
    mask_BxG: bool, valid samples.
    beta: beta_GAL (paper default 1, from its sensitivity table).

  Returns:
    ``Deferred(total, weight)``: the sum over pairs and the pair count, so
    micro-batches (split along B) combine exactly.
  """
  total, pairs = group_alignment_loss_per_prompt(
      seq_logp_BxG, seq_ref_logp_BxG, rewards_BxG, mask_BxG, beta=beta)
  return Deferred(jnp.sum(total), jnp.sum(pairs))


def dypo_loss(
    grpo_loss_B: jax.typing.ArrayLike,
    sft_loss_B: jax.typing.ArrayLike,
    seq_logp_BxG: jax.typing.ArrayLike,
    seq_ref_logp_BxG: jax.typing.ArrayLike,
    rewards_BxG: jax.typing.ArrayLike,
    mask_BxG: jax.typing.ArrayLike,
    *,
    alpha: float | jax.Array = 0.5,
    gamma: float | jax.Array = 1.0,
    beta: float | jax.Array = 1.0,
    threshold: float | jax.Array = 0.5,
    normalize: str = "all",
) -> Deferred:
  """DYPO's routed objective over prompts.

  See Zhu et al., DYPO (arXiv 2604.08926):
  ``L = E_q[1_H(q) * gamma * L_SFT + 1_M(q) * (alpha * L_GRPO
  + (1 - alpha) * L_GAL)]``, with the categories of :func:`dypo_route` and
  the per-prompt L_GAL (mean over the prompt's pairs, see
  :func:`group_alignment_loss`); easy prompts contribute 0. The GRPO and
  SFT losses come in per prompt; entries of the other categories are
  selected out with ``where`` (they may hold any finite value, e.g. 0).

  Args:
    grpo_loss_B: per-prompt GRPO loss on the rollouts (used if mixed).
    sft_loss_B: per-prompt SFT loss on one teacher solution,
      ``-log pi(y_tgt | q)`` (used if hard).
    seq_logp_BxG: rollout sequence log-probs under the current policy.
    seq_ref_logp_BxG: the same under the reference policy.
    rewards_BxG: rollout rewards (binary in the paper).
    mask_BxG: bool, valid rollouts.
    alpha: the GRPO share for mixed prompts (paper: 0.5); may be traced.
    gamma: the SFT weight. The paper does not state its value; 1.0 here.
    beta: beta_GAL (paper: 1).
    threshold: a rollout is correct when its reward is > threshold.
    normalize: what E_q averages over: ``"all"`` (default, the formula as
      written: every prompt with a valid rollout, easy ones adding 0) or
      ``"kept"`` (hard and mixed prompts only, as when easy prompts are
      filtered out of the batch before the update).

  Returns:
    ``Deferred(total, weight)`` with the prompt count as weight, so
    micro-batches split along B combine exactly.
  """
  what = "dypo_loss"
  sizes = _check_prompt_inputs(what, rewards_BxG, mask_BxG)
  sizes = {"B": sizes["B"]}
  for name, x in (("grpo_loss_B", grpo_loss_B), ("sft_loss_B", sft_loss_B)):
    _checks.check_named(name, x, sizes, what=what)
    _checks.check_floating(name, x, what=what)
  _checks.check_choice("normalize", normalize, DYPO_NORMALIZE, what=what)
  category = dypo_route(rewards_BxG, mask_BxG, threshold=threshold)
  total, pairs = group_alignment_loss_per_prompt(
      seq_logp_BxG, seq_ref_logp_BxG, rewards_BxG, mask_BxG, beta=beta)
  dtype = jnp.result_type(grpo_loss_B, sft_loss_B, total)
  gal = total.astype(dtype) / jnp.maximum(pairs, 1).astype(dtype)
  hard = category == DYPO_HARD
  mixed = category == DYPO_MIXED
  alpha = jnp.asarray(alpha, dtype)
  per_prompt = jnp.where(
      hard, jnp.asarray(gamma, dtype) * jnp.asarray(sft_loss_B, dtype),
      jnp.where(mixed, alpha * jnp.asarray(grpo_loss_B, dtype)
                + (1 - alpha) * gal, 0))
  if normalize == "kept":
    counted = hard | mixed
  else:
    counted = category != DYPO_EMPTY
  return Deferred(jnp.sum(per_prompt), jnp.sum(counted, dtype=dtype))


# ---------------------------------------------------------------------------
# BVPO and DPO
# ---------------------------------------------------------------------------


def _check_same(what: str, **arrays: Any) -> tuple[int, ...]:
  names = list(arrays)
  shape = jnp.shape(arrays[names[0]])
  for name in names:
    _checks.check_floating(name, arrays[name], what=what)
    if jnp.shape(arrays[name]) != shape:
      raise ValueError(f"{what}: {name} must have the shape of {names[0]} "
                       f"{shape}, got {jnp.shape(arrays[name])}.")
  return shape


def dpo_loss(policy_chosen_logp: jax.typing.ArrayLike,
             policy_rejected_logp: jax.typing.ArrayLike,
             ref_chosen_logp: jax.typing.ArrayLike,
             ref_rejected_logp: jax.typing.ArrayLike, *,
             beta: float | jax.Array = 0.1) -> jax.Array:
  """The DPO loss ``-log sigmoid(beta * margin)`` per preference pair.

  See Rafailov et al., DPO (arXiv 2305.18290). ``margin = [log pi(y+) -
  log pi_ref(y+)] - [log pi(y-) - log pi_ref(y-)]`` with sequence
  log-probs; the reference terms get no gradient.

  Args:
    policy_chosen_logp: sequence log-probs of the chosen responses, any
      shape (e.g. ``[N]``).
    policy_rejected_logp: the rejected responses, same shape.
    ref_chosen_logp: reference log-probs of the chosen responses.
    ref_rejected_logp: reference log-probs of the rejected responses.
    beta: the DPO temperature (TRL ``DPOConfig.beta`` default 0.1); may be
      traced.

  Returns:
    Per-pair losses, the shape of the inputs.
  """
  _check_same("dpo_loss", policy_chosen_logp=policy_chosen_logp,
              policy_rejected_logp=policy_rejected_logp,
              ref_chosen_logp=ref_chosen_logp,
              ref_rejected_logp=ref_rejected_logp)
  sg = jax.lax.stop_gradient
  margin = ((jnp.asarray(policy_chosen_logp) - sg(jnp.asarray(ref_chosen_logp)))
            - (jnp.asarray(policy_rejected_logp)
               - sg(jnp.asarray(ref_rejected_logp))))
  return jax.nn.softplus(-jnp.asarray(beta, margin.dtype) * margin)


def bvpo_loss(dpo_loss_trace: jax.typing.ArrayLike,
              dpo_loss_empty: jax.typing.ArrayLike, *,
              alpha: float | jax.Array) -> jax.Array:
  """BVPO: ``alpha * l_t + (1 - alpha) * l_e``.

  See Zhu et al., BVPO (arXiv 2510.05095). The project reference has this
  from a [summary], not the paper text. ``l_t`` is the DPO loss with sampled
  reasoning traces (``pi(r, y | x)``), ``l_e`` the same pairs with the
  trace empty (reasoning disabled); the mixed gradient ``alpha g_t +
  (1 - alpha) g_e`` is the gradient of this loss. In practice alpha is a
  fixed hyperparameter; no value is given, so it has no default here (see
  :func:`bvpo_optimal_alpha` for the MSE-optimal one).

  Args:
    dpo_loss_trace: l_t from :func:`dpo_loss`, any shape.
    dpo_loss_empty: l_e, same shape.
    alpha: the trace share in [0, 1]; may be traced.

  Returns:
    The mixed loss, the shape of the inputs.
  """
  _check_same("bvpo_loss", dpo_loss_trace=dpo_loss_trace,
              dpo_loss_empty=dpo_loss_empty)
  lt = jnp.asarray(dpo_loss_trace)
  a = jnp.asarray(alpha, lt.dtype)
  return a * lt + (1 - a) * jnp.asarray(dpo_loss_empty, lt.dtype)


def bvpo_optimal_alpha(grads_trace_NxD: jax.typing.ArrayLike,
                       grads_empty_NxD: jax.typing.ArrayLike,
                       true_grad_D: jax.typing.ArrayLike, *,
                       batch_size: int | float = 1,
                       clip: bool = True) -> jax.Array:
  """The MSE-optimal BVPO mixing weight from per-sample gradients.

  A [reading] (the generic form in the project reference, not verified
  against the paper, arXiv 2510.05095): for ``g_c = alpha g_t +
  (1 - alpha) g_e`` the MSE ``E||g_c - g*||^2`` is minimised by

    ``alpha* = (||b_e||^2 - <b_t, b_e> + tr S_e - tr C)
              / (||b_t - b_e||^2 + tr S_t + tr S_e - 2 tr C)``

  with biases ``b = E[g] - g*``, covariance traces ``tr S`` and the cross
  covariance trace ``tr C = tr Cov(g_t, g_e)``. Here all moments are plug-in
  estimates from N paired per-sample gradients (population moments, divided
  by ``batch_size`` for the variance of a mean over ``batch_size`` pairs).
  With ``batch_size=1`` this equals ``mean_n <g_e - g_t, g_e - g*> /
  mean_n ||g_t - g_e||^2`` exactly.

  Args:
    grads_trace_NxD: per-sample gradients with reasoning traces (row n and
      row n of ``grads_empty_NxD`` come from the same preference pair).
    grads_empty_NxD: per-sample gradients with the empty trace.
    true_grad_D: an estimate of the true marginal gradient g*.
    batch_size: pairs per mini-batch the mixed gradient is used with.
    clip: clip alpha* to [0, 1] (the optimum over convex mixtures, since
      the MSE is a convex quadratic in alpha).

  Returns:
    alpha* (scalar). 0.5 when ``g_t == g_e`` for every sample (any alpha is
    then optimal).
  """
  what = "bvpo_optimal_alpha"
  sizes = _checks.check_named("grads_trace_NxD", grads_trace_NxD, what=what)
  sizes = _checks.check_named("grads_empty_NxD", grads_empty_NxD, sizes,
                              what=what)
  _checks.check_named("true_grad_D", true_grad_D, sizes, what=what)
  for name, x in (("grads_trace_NxD", grads_trace_NxD),
                  ("grads_empty_NxD", grads_empty_NxD),
                  ("true_grad_D", true_grad_D)):
    _checks.check_floating(name, x, what=what)
  if _checks.is_concrete(batch_size) and not float(batch_size) > 0:
    raise ValueError(f"{what}: batch_size must be > 0, got {batch_size!r}.")
  gt = jnp.asarray(grads_trace_NxD)
  ge = jnp.asarray(grads_empty_NxD, gt.dtype)
  gs = jnp.asarray(true_grad_D, gt.dtype)
  mt, me = jnp.mean(gt, axis=0), jnp.mean(ge, axis=0)
  bt, be = mt - gs, me - gs
  ct, ce = gt - mt[None, :], ge - me[None, :]
  n = jnp.asarray(batch_size, gt.dtype)
  tr_t = jnp.mean(jnp.sum(ct * ct, axis=-1)) / n
  tr_e = jnp.mean(jnp.sum(ce * ce, axis=-1)) / n
  tr_c = jnp.mean(jnp.sum(ct * ce, axis=-1)) / n
  num = jnp.dot(be, be) - jnp.dot(bt, be) + tr_e - tr_c
  den = jnp.dot(bt - be, bt - be) + tr_t + tr_e - 2 * tr_c
  alpha = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0.5)
  return jnp.clip(alpha, 0, 1) if clip else alpha


# ---------------------------------------------------------------------------
# HPT
# ---------------------------------------------------------------------------


class HptCoefs(NamedTuple):
  """Per-prompt loss coefficients chosen by :func:`hpt_switch`."""

  rl: jax.Array  # [B]; on-policy RL (GRPO) loss on the prompt's rollouts
  sft: jax.Array  # [B]; SFT loss on the prompt's demonstration
  off_rl: jax.Array  # [B]; off-policy RL on the demonstration (middle band)


def hpt_switch(rewards_BxG: jax.typing.ArrayLike,
               mask_BxG: jax.typing.ArrayLike, *,
               gate: int | jax.Array = 0,
               gate_off: int | jax.Array | None = None,
               strategy: str = "switch",
               table: jax.typing.ArrayLike | None = None,
               sft_coef: float | jax.Array = 1.0,
               threshold: float | jax.Array = 0.5) -> HptCoefs:
  """HPT's per-prompt choice between RL and SFT from the rollouts' success.

  See Lv et al., "Towards a Unified View of Large Language Model
  Post-Training" (UPGE / HPT; code ``TsinghuaC3I/Unify-Post-Training``,
  ``mix_trainer.py::select_on_off_ada_balance``). With k = the number of
  correct (``reward > threshold``) valid rollouts of a prompt, strategy
  ``"switch"`` gives ``(rl, sft, off_rl)``:

  * ``k <= gate``: ``(0, 1, 0)``: drop the rollouts, SFT on one
    demonstration (the code's ``off_add_num = 1``);
  * ``gate < k <= gate_off``: ``(0, 0, 1)``: drop the rollouts, train the
    demonstration with the off-policy RL loss (``off_add_num = -1``);
  * otherwise ``(1, 0, 0)``: the on-policy RL loss.

  ``gate_off=None`` means ``gate`` (no middle band), the paper's setting;
  so with the defaults L = 1·L_RL if k > 0 else 1·L_SFT.

  Strategy ``"soft"`` looks the coefficients up in ``table`` by k. Without
  a table it is the code's ``soft`` branch: keep the rollouts and add one
  SFT demonstration for every prompt, ``(1, 1, 0)``.

  ``sft_coef`` (HPT's SFT loss coefficient: 1.0; 0.3 for
  Qwen2.5-Math-1.5B) multiplies the ``sft`` column in every case, tables
  included. A prompt with no valid rollout gets all zeros.

  Args:
    rewards_BxG: rewards, binary in HPT.
    mask_BxG: bool, valid rollouts.
    gate: gamma, HPT ``switch_gate`` (default 0); may be traced.
    gate_off: HPT ``switch_gate_off`` or None; may be traced.
    strategy: ``"switch"`` or ``"soft"``.
    table: for ``"soft"``: ``[G + 1, 3]`` coefficients ``(rl, sft, off_rl)``
      indexed by k = 0..G.
    sft_coef: scale of the SFT coefficient.
    threshold: a rollout is correct when its reward is > threshold.

  Returns:
    ``HptCoefs(rl, sft, off_rl)``, each ``[B]`` float.
  """
  what = "hpt_switch"
  sizes = _check_prompt_inputs(what, rewards_BxG, mask_BxG)
  _checks.check_choice("strategy", strategy, HPT_STRATEGIES, what=what)
  if strategy == "switch" and table is not None:
    raise ValueError(f"{what}: table is used by strategy 'soft' only.")
  dtype = jnp.result_type(float)
  if table is not None:
    if jnp.shape(table) != (sizes["G"] + 1, 3):
      raise ValueError(f"{what}: table must have shape [G + 1, 3] = "
                       f"({sizes['G'] + 1}, 3) for (rl, sft, off_rl) by k, "
                       f"got {jnp.shape(table)}.")
    _checks.check_floating("table", table, what=what)
    dtype = jnp.asarray(table).dtype
  n, k = _num_correct(rewards_BxG, mask_BxG, threshold)
  if strategy == "switch":
    gate_off = gate if gate_off is None else gate_off
    to_sft = k <= gate
    to_off = ~to_sft & (k <= gate_off)
    coefs = jnp.stack([~to_sft & ~to_off, to_sft, to_off],
                      axis=-1).astype(dtype)
  elif table is None:
    coefs = jnp.broadcast_to(jnp.asarray([1, 1, 0], dtype), k.shape + (3,))
  else:
    coefs = jnp.asarray(table)[k]
  coefs = jnp.where((n > 0)[:, None], coefs, 0)
  scale = jnp.stack([jnp.ones((), dtype), jnp.asarray(sft_coef, dtype),
                     jnp.ones((), dtype)])
  coefs = coefs * scale[None, :]
  return HptCoefs(rl=coefs[:, 0], sft=coefs[:, 1], off_rl=coefs[:, 2])
