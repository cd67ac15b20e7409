"""Length handling: overlong reward shaping and truncated-sample masks.

DAPO (Yu et al., arXiv 2503.14476) treats over-long samples two ways: a soft
length penalty added to the reward, or "overlong filtering", masking samples
that hit the length budget out of the loss. TRL's
``mask_truncated_completions`` is the second idea with truncation detected
from the tokens (no EOS at the end).
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxrl_group import _checks

SHAPING_FORMS = ("paper", "verl")


def _float_dtype(x: jax.Array):
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x.dtype
  return jnp.result_type(float)  # float32, or float64 under jax_enable_x64


def overlong_reward_shaping(
    lengths_BxG: jax.typing.ArrayLike,
    *,
    max_len: int | float,
    cache_len: int | float,
    penalty_factor: float | jax.Array = 1.0,
    form: str = "paper",
    mask_BxG: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """DAPO's soft overlong punishment, a reward addition per sample.

  See Yu et al., DAPO (arXiv 2503.14476), "overlong reward shaping". With
  ``L = |y|``, ``L_max = max_len``, ``L_cache = cache_len`` and the factor
  ``c = penalty_factor``:

  * ``form="paper"`` (default): ``0`` if ``L <= L_max - L_cache``;
    ``c * ((L_max - L_cache) - L) / L_cache`` if ``L_max - L_cache < L <=
    L_max``; ``-c`` if ``L > L_max``. With ``c = 1`` (the paper, which has
    no factor) this is exactly the paper's 0 / linear / -1 function.
  * ``form="verl"`` (``verl/workers/reward_manager/dapo.py``,
    ``reward_model.overlong_buffer.{len, penalty_factor}``):
    ``min(-(L - (L_max - L_cache)) / L_cache * c, 0)``, with no floor.

  The two agree for every ``L <= L_max`` and every ``c`` (the linear piece
  reaches ``-c`` at ``L = L_max``). They differ only beyond ``L_max``: the
  paper stops at ``-1`` (here ``-c``: the factor scales the whole function,
  so that it stays continuous), while verl keeps decreasing linearly. In
  verl generation never exceeds ``max_resp_len``, so that branch is not
  reached in practice. verl puts the addition on the last valid token; here
  it is a ``[B, G]`` term to add to the outcome reward.

  Args:
    lengths_BxG: completion lengths in tokens (int or float).
    max_len: L_max, the length budget (DAPO: 20480; verl ``max_resp_len``).
    cache_len: L_cache, the punishment interval (DAPO: 4096; verl
      ``overlong_buffer.len``); ``0 < cache_len <= max_len``.
    penalty_factor: c (verl ``overlong_buffer.penalty_factor``, default 1.0);
      may be traced.
    form: ``"paper"`` or ``"verl"``.
    mask_BxG: optional bool, valid samples; masked entries give 0.

  Returns:
    ``[B, G]`` float reward additions (<= 0).
  """
  what = "overlong_reward_shaping"
  sizes = _checks.check_named("lengths_BxG", lengths_BxG, what=what)
  _checks.check_choice("form", form, SHAPING_FORMS, what=what)
  if _checks.is_concrete(cache_len) and not float(cache_len) > 0:
    raise ValueError(f"{what}: cache_len must be > 0, got {cache_len!r}.")
  if (_checks.is_concrete(cache_len) and _checks.is_concrete(max_len)
      and float(cache_len) > float(max_len)):
    raise ValueError(f"{what}: cache_len must be <= max_len (verl requires "
                     f"max_resp_len >= overlong_buffer.len), got cache_len="
                     f"{cache_len!r} > max_len={max_len!r}.")
  _checks.check_nonnegative("penalty_factor", penalty_factor, what=what)
  lengths = jnp.asarray(lengths_BxG)
  dtype = _float_dtype(lengths)
  length = lengths.astype(dtype)
  expected = jnp.asarray(max_len, dtype) - jnp.asarray(cache_len, dtype)
  factor = jnp.asarray(penalty_factor, dtype)
  linear = -(length - expected) / jnp.asarray(cache_len, dtype) * factor
  shaped = jnp.minimum(linear, 0)
  if form == "paper":
    shaped = jnp.where(length > jnp.asarray(max_len, dtype), -factor, shaped)
  if mask_BxG is not None:
    _checks.check_named("mask_BxG", mask_BxG, sizes, what=what)
    _checks.check_bool("mask_BxG", mask_BxG, what=what)
    shaped = jnp.where(jnp.asarray(mask_BxG), shaped, 0)
  return shaped


def overlong_filter_mask(truncated_BxG: jax.typing.ArrayLike,
                         mask_BxGxT: jax.typing.ArrayLike) -> jax.Array:
  """Removes truncated samples from the loss mask (DAPO overlong filtering).

  See Yu et al., DAPO (arXiv 2503.14476): samples cut at the length budget
  get no gradient, so a correct but unfinished reasoning chain is not
  punished for its length. verl does not implement it (its docs FAQ). A
  sample is truncated when it hit the budget without finishing, e.g.
  ``lengths_BxG >= max_len`` without EOS, or :func:`is_truncated`.

  Args:
    truncated_BxG: bool, True for truncated samples.
    mask_BxGxT: bool, valid tokens.

  Returns:
    bool ``[B, G, T]``: ``mask_BxGxT`` with the truncated samples' rows
    cleared. Aggregating with it also drops them from the denominators (TRL
    excludes them from ``num_items_in_batch`` too).
  """
  what = "overlong_filter_mask"
  sizes = _checks.check_named("mask_BxGxT", mask_BxGxT, what=what)
  _checks.check_bool("mask_BxGxT", mask_BxGxT, what=what)
  _checks.check_named("truncated_BxG", truncated_BxG, sizes, what=what)
  _checks.check_bool("truncated_BxG", truncated_BxG, what=what)
  return jnp.asarray(mask_BxGxT) & ~jnp.asarray(truncated_BxG)[..., None]


def is_truncated(tokens_BxGxT: jax.typing.ArrayLike,
                 mask_BxGxT: jax.typing.ArrayLike, *,
                 eos_ids: int | Sequence[int] | jax.typing.ArrayLike
                 ) -> jax.Array:
  """True for completions whose last valid token is not an EOS token.

  This is TRL's test for ``mask_truncated_completions`` stated on the mask:
  TRL checks that the last position of the padded completion is neither
  EOS nor pad, which for right-padded completions whose mask covers the
  EOS token is the same as the last *valid* token not being EOS. The mask
  must therefore include the EOS token (TRL's completion mask and verl's
  response mask do). A completion with no valid token is not truncated.

  Args:
    tokens_BxGxT: int, completion token ids (any padding value).
    mask_BxGxT: bool, valid completion tokens, EOS included.
    eos_ids: one id or several (e.g. ``<|im_end|>`` and ``<|endoftext|>``).

  Returns:
    bool ``[B, G]``.
  """
  what = "is_truncated"
  sizes = _checks.check_named("mask_BxGxT", mask_BxGxT, what=what)
  _checks.check_bool("mask_BxGxT", mask_BxGxT, what=what)
  _checks.check_named("tokens_BxGxT", tokens_BxGxT, sizes, what=what)
  _checks.check_integer("tokens_BxGxT", tokens_BxGxT, what=what)
  eos = jnp.ravel(jnp.asarray(eos_ids))
  if eos.size == 0:
    raise ValueError(f"{what}: eos_ids must name at least one token id.")
  _checks.check_integer("eos_ids", eos, what=what)
  mask = jnp.asarray(mask_BxGxT)
  tokens = jnp.asarray(tokens_BxGxT)
  t = mask.shape[-1]
  positions = jnp.arange(t)[None, None, :]
  last = jnp.max(jnp.where(mask, positions, -1), axis=-1)  # [B, G]
  last_token = jnp.take_along_axis(
      tokens, jnp.maximum(last, 0)[..., None], axis=-1)[..., 0]
  ended = jnp.any(last_token[..., None] == eos[None, None, :], axis=-1)
  return (last >= 0) & ~ended


def mask_truncated_completions(tokens_BxGxT: jax.typing.ArrayLike,
                               mask_BxGxT: jax.typing.ArrayLike, *,
                               eos_ids: Any) -> jax.Array:
  """Zeroes the mask of completions that did not end with EOS.

  TRL ``mask_truncated_completions=True`` (GRPO and RLOO trainers; default
  False): ``overlong_filter_mask(is_truncated(tokens, mask, eos_ids=...),
  mask)``. See :func:`is_truncated` for the test and its assumption (the
  mask includes the EOS token).

  Args:
    tokens_BxGxT: int, completion token ids.
    mask_BxGxT: bool, valid completion tokens, EOS included.
    eos_ids: one EOS id or several.

  Returns:
    bool ``[B, G, T]``.
  """
  truncated = is_truncated(tokens_BxGxT, mask_BxGxT, eos_ids=eos_ids)
  return overlong_filter_mask(truncated, mask_BxGxT)
