"""The advantage-transform interface: an ``(init, update)`` pair, optax style.

An advantage transform turns per-sample rewards (or the advantages of the
transform before it in a chain) laid out as ``[B, G]`` (B prompts, G samples
per prompt) into advantages. Its memory, if any, is a NamedTuple state that is
jittable, shardable and checkpointable like optax optimiser state.
"""

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxrl_group import _checks

PyTree = Any
State = PyTree


class InitFn(Protocol):
  """``state = init(rewards_BxG)``; accepts a ``jax.ShapeDtypeStruct`` too."""

  def __call__(self, rewards_BxG: jax.Array | jax.ShapeDtypeStruct) -> State:
    ...


class UpdateFn(Protocol):
  """``adv, state = update(values_BxG, state, *, mask_BxG, **ctx)``."""

  def __call__(self, values_BxG: jax.Array, state: State, *,
               mask_BxG: jax.Array | None = None,
               **ctx: Any) -> tuple[jax.Array, State]:
    ...


class AdvantageTransform(NamedTuple):
  """A pair of pure functions computing advantages from grouped rewards.

  Attributes:
    init: ``init(rewards_BxG) -> state``. Works on arrays and on
      ``jax.ShapeDtypeStruct`` (``jax.eval_shape(tx.init, spec)``).
    update: ``update(values_BxG, state, *, mask_BxG=None, **ctx) ->
      (advantages, state)``. ``values_BxG`` are the rewards for the first
      transform of a chain and the previous advantages after that.
      ``mask_BxG`` (bool) marks valid samples; ``None`` means all valid.
      Masked entries never enter statistics and come out as 0. Extra inputs
      arrive keyword-only through ``ctx`` (see ``CONTEXT_KEYS``); unknown keys
      are ignored and a missing required key raises ``MissingContextError``.
  """

  init: InitFn
  update: UpdateFn


class EmptyState(NamedTuple):
  """The state of a stateless transform."""


class MissingContextError(TypeError):
  """A transform needs a context input (``**ctx``) that was not passed."""


# The context inputs that the library's transforms read, by name. The suffix
# is the shape (checked at trace time); T is the padded completion length.
CONTEXT_KEYS: dict[str, str] = {
    "lengths_BxG": "completion length |o_i| in tokens (OPO and others).",
    "token_mask_BxGxT": "bool, valid completion tokens of each sample.",
    "entropy_BxG": "mean token entropy of each sample.",
    "ref_rewards_BxG": "rewards of reference-policy samples (AAPO, PVPO).",
    "prompt_ids_B": "int, an id per prompt (per-prompt tables).",
    "step": "int scalar, the training step (schedules).",
    "greedy_rewards_B": "reward of a greedy rollout per prompt (ReMax).",
    "values_BxGxT": "critic value estimates per token (GAE).",
    "old_logp_BxGxT": "behaviour-policy log-probabilities of sampled tokens.",
    "sum_pi_sq_BxGxT": "sum over the vocabulary of pi_v^2 per token (OTB).",
    "is_weights_BxGxT": "rollout importance weights per token (OTB).",
    "kl_BxGxT": "per-token KL estimate folded into the reward as -kl_coef*kl.",
    "score_norm_sq_BxG": "squared score-norm proxy per sample (OBLR-PO).",
    "value_prior_B": "a value model's predicted success rate per prompt (V0.5).",
    "first_error_step_BxG": "index of the first wrong step from a judge (SGPO).",
    "num_steps_BxG": "number of reasoning steps per response (SGPO).",
    "logp_temp_BxGxT": "old-policy log-probs at DCPO's temperature.",
    "role_ids_BxG": "int, functional group (role) of each sample (AdvEvo-MARL).",
    "subgroup_ids_BxG": "int in [0, K), population group of each sample.",
    "tokens_BxGxT": "int, sampled token ids of each completion (KTAE).",
    "answer_ids_BxG": "int, id of each sample's final answer (COPO).",
    "entropy_BxGxT": "per-token entropy of the current policy (EDGE-GRPO).",
    "ref_rewards_BxM": "rewards of M reference samples per prompt (PVPO).",
}


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1``, saturating at the dtype's maximum instead of wrapping."""
  max_int = jnp.iinfo(count.dtype).max
  return jnp.where(count < max_int, count + 1, max_int)


def stateless(update_fn: Callable[..., jax.Array]) -> AdvantageTransform:
  """Builds a stateless transform from ``f(values, *, mask_BxG, **ctx)``.

  Args:
    update_fn: a pure function returning the advantages only.

  Returns:
    An ``AdvantageTransform`` whose state is ``EmptyState()``.
  """

  def init_fn(rewards_BxG):
    del rewards_BxG
    return EmptyState()

  def wrapped_update(values, state, *, mask_BxG=None, **ctx):
    return update_fn(values, mask_BxG=mask_BxG, **ctx), state

  return AdvantageTransform(init_fn, wrapped_update)


def prepare(what: str, values: Any, mask_BxG: Any, *,
            name: str = "rewards_BxG", min_group_size: int = 1,
            ) -> tuple[jax.Array, jax.Array, dict[str, int]]:
  """Checks the main input and mask of a transform; fills in a default mask.

  Args:
    what: the transform's name, used in error messages.
    values: the rewards or advantages.
    mask_BxG: bool mask of valid samples, or None for all valid.
    name: the shape-suffixed name of ``values`` (``rewards_BxG``,
      ``rewards_BxGxK``, ``adv_BxGxT``).
    min_group_size: the smallest static G the transform accepts.

  Returns:
    ``(values, mask_BxG, sizes)`` with the sizes read from the shapes.
  """
  values = jnp.asarray(values)
  sizes = _checks.check_named(name, values, what=what)
  _checks.check_floating(name, values, what=what)
  if sizes["G"] < min_group_size:
    raise ValueError(
        f"{what} needs a group size G >= {min_group_size}, got G = "
        f"{sizes['G']} from {name} of shape {values.shape}; sample at least "
        f"{min_group_size} completions per prompt.")
  if mask_BxG is None:
    mask_BxG = jnp.ones((sizes["B"], sizes["G"]), dtype=bool)
  else:
    mask_BxG = jnp.asarray(mask_BxG)
    _checks.check_named("mask_BxG", mask_BxG, sizes, what=what)
    _checks.check_bool("mask_BxG", mask_BxG, what=what)
  return values, mask_BxG, sizes


def _fetch(what: str, ctx: dict[str, Any], key: str,
           sizes: dict[str, int]) -> jax.Array:
  x = ctx[key]
  if key == "step":
    return jnp.asarray(x)
  x = jnp.asarray(x)
  sizes.update(_checks.check_named(key, x, sizes, what=what))
  return x


def require(what: str, ctx: dict[str, Any], key: str,
            sizes: dict[str, int]) -> jax.Array:
  """Returns ``ctx[key]`` after a shape check, or raises MissingContextError.

  Args:
    what: the transform's name, used in error messages.
    ctx: the keyword inputs passed to ``update``.
    key: a shape-suffixed context name such as ``"lengths_BxG"``.
    sizes: sizes known so far; updated in place with the ones ``key`` fixes.
  """
  if ctx.get(key) is None:
    raise MissingContextError(
        f"{what} needs the context input {key} "
        f"({CONTEXT_KEYS.get(key, 'see the docstring')}); pass it as "
        f"update(..., {key}=...). Got context keys: "
        f"{sorted(k for k, v in ctx.items() if v is not None)}.")
  return _fetch(what, ctx, key, sizes)


def optional(what: str, ctx: dict[str, Any], key: str,
             sizes: dict[str, int]) -> jax.Array | None:
  """Returns ``ctx[key]`` after a shape check, or None if it is absent."""
  if ctx.get(key) is None:
    return None
  return _fetch(what, ctx, key, sizes)
