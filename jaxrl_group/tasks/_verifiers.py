"""Jittable answer checks on sampled token arrays.

A completion is read from its valid tokens (``mask`` True), in order. It is
*well formed* iff they are: an optional ``'-'``, then 1 to ``max_digits``
digits, then ``<eos>``. Anything else before the first valid ``<eos>``
(spaces, letters, a second sign, a '-' after a digit) makes it malformed, and
so does a completion without a valid ``<eos>`` (e.g. cut off by the length
budget or by the mask). Decisions on the edge cases:

- Leading zeros are accepted: ``"07"`` reads as 7 (and counts as 2 digits
  against ``max_digits``). ``"-0"`` reads as 0.
- ``<eos>`` ends the completion: valid tokens after the first valid
  ``<eos>`` are ignored.
- An empty answer (``<eos>`` first) and a bare ``'-'`` are malformed.
- Masked-out tokens are skipped wherever they are.

The value of a malformed completion is 0. ``max_digits <= 9`` keeps every
value inside int32, so no sum can overflow.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks
from jaxrl_group.tasks._tokenizer import CHAR_TO_ID
from jaxrl_group.tasks._tokenizer import DIGIT0_ID
from jaxrl_group.tasks._tokenizer import EOS_ID

MAX_DIGITS = 9
_MINUS_ID = int(CHAR_TO_ID[ord("-")])
_POW10 = np.array([10 ** k for k in range(MAX_DIGITS)], np.int32)

Verifier = Callable[[jax.Array, jax.Array, jax.Array],
                    tuple[jax.Array, dict[str, jax.Array]]]


def _check_tokens(what: str, tokens: Any, mask: Any) -> None:
  """Checks ``tokens`` ([..., T] ints) and ``mask`` (bool, same shape)."""
  if np.ndim(tokens) < 1:
    raise ValueError(f"{what}: tokens must have a trailing time axis T, got "
                     f"shape {np.shape(tokens)}.")
  _checks.check_integer("tokens", tokens, what=what)
  if mask is not None:
    _checks.check_bool("mask", mask, what=what)
    if np.shape(mask) != np.shape(tokens):
      raise ValueError(f"{what}: mask must have the shape of tokens, "
                       f"{np.shape(tokens)}, got {np.shape(mask)}.")


def _check_max_digits(what: str, max_digits: Any) -> None:
  if (not isinstance(max_digits, int) or isinstance(max_digits, bool)
      or not 1 <= max_digits <= MAX_DIGITS):
    raise ValueError(f"{what}: max_digits must be an int in [1, "
                     f"{MAX_DIGITS}] (more digits can overflow int32), got "
                     f"{max_digits!r}.")


@functools.partial(jax.jit, static_argnums=2)
def _parse(tokens_XxT, mask_XxT, max_digits):
  """``parse_answer`` without the checks; leading dims X are any."""
  tokens_XxT = jnp.asarray(tokens_XxT, jnp.int32)
  if mask_XxT is None:
    mask_XxT = jnp.ones(tokens_XxT.shape, bool)
  t = tokens_XxT.shape[-1]
  pos_T = jnp.arange(t, dtype=jnp.int32)
  pos_XxT = jnp.broadcast_to(pos_T, tokens_XxT.shape)

  eos_XxT = mask_XxT & (tokens_XxT == EOS_ID)
  has_eos_X = jnp.any(eos_XxT, axis=-1)
  end_X = jnp.where(has_eos_X, jnp.argmax(eos_XxT, axis=-1), t)
  before_XxT = mask_XxT & (pos_XxT < end_X[..., None])
  first_X = jnp.argmax(mask_XxT, axis=-1)  # First valid token.

  digit_XxT = before_XxT & (tokens_XxT >= DIGIT0_ID) & (
      tokens_XxT < DIGIT0_ID + 10)
  minus_XxT = before_XxT & (tokens_XxT == _MINUS_ID) & (
      pos_XxT == first_X[..., None])
  bad_X = jnp.any(before_XxT & ~digit_XxT & ~minus_XxT, axis=-1)
  n_X = jnp.sum(digit_XxT, axis=-1, dtype=jnp.int32)
  well_formed_X = has_eos_X & ~bad_X & (n_X >= 1) & (n_X <= max_digits)

  # Horner's sum in closed form: the k-th digit from the right weighs 10^k.
  # Digits beyond max_digits are dropped (the answer is malformed then), so
  # the sum stays below 10^max_digits <= 10^9 < 2^31.
  k_XxT = n_X[..., None] - jnp.cumsum(digit_XxT, axis=-1, dtype=jnp.int32)
  keep_XxT = digit_XxT & (k_XxT < max_digits)
  weight_XxT = jnp.asarray(_POW10)[jnp.clip(k_XxT, 0, MAX_DIGITS - 1)]
  value_X = jnp.sum(
      jnp.where(keep_XxT, (tokens_XxT - DIGIT0_ID) * weight_XxT, 0),
      axis=-1, dtype=jnp.int32)
  value_X = jnp.where(jnp.any(minus_XxT, axis=-1), -value_X, value_X)
  return jnp.where(well_formed_X, value_X, 0), well_formed_X


def parse_answer(tokens_BxGxT: jax.typing.ArrayLike,
                 mask_BxGxT: jax.typing.ArrayLike | None = None, *,
                 max_digits: int = MAX_DIGITS) -> tuple[jax.Array, jax.Array]:
  """Reads the integer answer of each completion; jittable.

  Args:
    tokens_BxGxT: int completion ids; any leading dims, time last.
    mask_BxGxT: bool, valid tokens, same shape; None means all valid.
    max_digits: the most digits a well-formed answer may have, 1..9.

  Returns:
    ``(value_BxG int32, well_formed_BxG bool)`` over the leading dims; the
    value is 0 where the completion is malformed (see the module doc).
  """
  what = "parse_answer"
  _check_tokens(what, tokens_BxGxT, mask_BxGxT)
  _check_max_digits(what, max_digits)
  return _parse(tokens_BxGxT, mask_BxGxT, max_digits)


def _check_bgt(what, tokens_BxGxT, mask_BxGxT, answers_B=None):
  sizes = _checks.check_named("tokens_BxGxT", tokens_BxGxT, what=what)
  _checks.check_integer("tokens_BxGxT", tokens_BxGxT, what=what)
  if mask_BxGxT is not None:
    _checks.check_named("mask_BxGxT", mask_BxGxT, sizes, what=what)
    _checks.check_bool("mask_BxGxT", mask_BxGxT, what=what)
  if answers_B is not None:
    _checks.check_named("answers_B", answers_B, sizes, what=what)
    _checks.check_integer("answers_B", answers_B, what=what)


def exact_match(tokens_BxGxT: jax.typing.ArrayLike,
                mask_BxGxT: jax.typing.ArrayLike | None,
                answers_B: jax.typing.ArrayLike, *,
                max_digits: int = MAX_DIGITS) -> jax.Array:
  """1.0 where a completion is well formed and equals its prompt's answer.

  Args:
    tokens_BxGxT: int completion ids, G samples for each of B prompts.
    mask_BxGxT: bool, valid tokens; None means all valid.
    answers_B: int exact answers.
    max_digits: as in :func:`parse_answer`.

  Returns:
    ``rewards_BxG`` float32 in {0, 1}.
  """
  what = "exact_match"
  _check_bgt(what, tokens_BxGxT, mask_BxGxT, answers_B)
  _check_max_digits(what, max_digits)
  value_BxG, ok_BxG = _parse(tokens_BxGxT, mask_BxGxT, max_digits)
  answers_B = jnp.asarray(answers_B, jnp.int32)
  return (ok_BxG & (value_BxG == answers_B[:, None])).astype(jnp.float32)


def format_reward(tokens_BxGxT: jax.typing.ArrayLike,
                  mask_BxGxT: jax.typing.ArrayLike | None = None, *,
                  max_digits: int = MAX_DIGITS) -> jax.Array:
  """1.0 where a completion is well formed, whatever its value.

  Args:
    tokens_BxGxT: int completion ids.
    mask_BxGxT: bool, valid tokens; None means all valid.
    max_digits: as in :func:`parse_answer`.

  Returns:
    ``rewards_BxG`` float32 in {0, 1}.
  """
  what = "format_reward"
  _check_bgt(what, tokens_BxGxT, mask_BxGxT)
  _check_max_digits(what, max_digits)
  return _parse(tokens_BxGxT, mask_BxGxT, max_digits)[1].astype(jnp.float32)


def make_verifier(*, correct_weight: float = 1.0, format_weight: float = 0.0,
                  max_digits: int = MAX_DIGITS) -> Verifier:
  """A reward function ``correct_weight * correct + format_weight * format``.

  Args:
    correct_weight: reward for a correct answer (correct implies well
      formed, so a correct one gets both weights).
    format_weight: reward for a well-formed answer, right or wrong.
    max_digits: as in :func:`parse_answer`.

  Returns:
    ``verify(tokens_BxGxT, mask_BxGxT, answers_B) -> (rewards_BxG,
    metrics)``, jittable; ``rewards_BxG`` is float32 and ``metrics`` maps
    ``"correct"`` and ``"well_formed"`` to ``[B, G]`` float32 0/1 arrays.
  """
  what = "make_verifier"
  _check_max_digits(what, max_digits)
  for name, w in (("correct_weight", correct_weight),
                  ("format_weight", format_weight)):
    if _checks.is_concrete(w) and not np.isfinite(w):
      raise ValueError(f"{what}: {name} must be finite, got {w!r}.")

  def verify(tokens_BxGxT, mask_BxGxT, answers_B):
    _check_bgt("verify", tokens_BxGxT, mask_BxGxT, answers_B)
    value_BxG, ok_BxG = _parse(tokens_BxGxT, mask_BxGxT, max_digits)
    answers_B = jnp.asarray(answers_B, jnp.int32)
    correct_BxG = (ok_BxG & (value_BxG == answers_B[:, None])).astype(
        jnp.float32)
    well_formed_BxG = ok_BxG.astype(jnp.float32)
    rewards_BxG = (correct_weight * correct_BxG
                   + format_weight * well_formed_BxG).astype(jnp.float32)
    return rewards_BxG, {"correct": correct_BxG,
                         "well_formed": well_formed_BxG}

  return verify


# Named reward functions. "exact_match_format" splits 0.9 correctness and 0.1
# format, so rewards stay in [0, 1] with exactly 1.0 for a correct answer.
VERIFIERS: dict[str, Verifier] = {
    "exact_match": make_verifier(),
    "exact_match_format": make_verifier(correct_weight=0.9,
                                        format_weight=0.1),
}
