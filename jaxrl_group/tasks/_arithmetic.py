"""Synthetic arithmetic tasks generated on device from a PRNG key.

A task asks for the exact decimal value of ``a+b=``, ``a+b+c=`` or ``a*b=``
written in characters of the 64-id vocabulary (``_tokenizer``). Prompts are
left-padded with ``<pad>`` to ``prompt_len`` so that every prompt ends at the
last position; the gold completion is the answer's digits, then ``<eos>``,
right-padded to ``answer_len``.

Named settings (``TASKS``; every prompt fits ``prompt_len = 16``), with
their answers and ``answer_len`` (answer digits + EOS):

- ``add2``: 2-digit + 2-digit, answers 20..198, answer_len 4 (the reference
  benchmark task).
- ``add3``: 3-digit + 3-digit, 200..1998, answer_len 5.
- ``add4``: 4-digit + 4-digit, 2000..19998, answer_len 6.
- ``sum3x2``: three 2-digit terms (a multi-step sum), 30..297, answer_len 4.
- ``mul1``: 1-digit (0..9) * 2-digit, 0..891, answer_len 4 (only 900
  problems, 51 of them held out).
- ``mul2``: 2-digit * 2-digit, 100..9801, answer_len 5.

A d-digit operand is a true d-digit number, ``10^(d-1) .. 10^d - 1``;
``d = 1`` allows ``0 .. 9``.

Held-out split: a problem is an "eval" problem iff a fixed integer hash of
its operands, sorted, has its top ``EVAL_BITS`` bits zero (a fraction
``2^-EVAL_BITS = 1/16``). Sorting makes ``a+b`` and ``b+a`` (``a*b`` and
``b*a``) land in the same split, so a swapped copy of an eval problem is never
trained on. ``sample(split="train")`` draws only train problems and
``split="eval"`` only eval problems: a fixed number of vectorised rejection
rounds, then a fixed problem of the requested split for the rare rows where
every round missed (at most ``(1/16)^8`` of train rows and ``(15/16)^256``,
about ``7e-8``, of eval rows).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks
from jaxrl_group.tasks._tokenizer import CHAR_TO_ID
from jaxrl_group.tasks._tokenizer import DIGIT0_ID
from jaxrl_group.tasks._tokenizer import EOS_ID
from jaxrl_group.tasks._tokenizer import PAD_ID

OPS = ("add", "mul")
SPLITS = ("train", "eval")
# Eval problems are those whose hash has its top EVAL_BITS bits zero.
EVAL_BITS = 4
EVAL_FRACTION = 2.0 ** -EVAL_BITS
# Answers must fit int32 and the default parse_answer(max_digits=9).
MAX_ANSWER_DIGITS = 9
# Rejection rounds per split before the fallback problem is used.
SAMPLE_ROUNDS = {"train": 8, "eval": 256}
# eval_set enumerates the whole problem space up to this many problems.
_ENUMERATE_LIMIT = 1 << 20
# The fallback problems are searched among this many enumerated problems.
_FALLBACK_SEARCH = 1 << 16

_OP_CHAR = {"add": "+", "mul": "*"}
_POW10 = np.array([10 ** k for k in range(MAX_ANSWER_DIGITS + 1)], np.int32)


class TaskBatch(NamedTuple):
  """A batch of problems, as token arrays and integers.

  Attributes:
    prompts_BxP: int32 prompt ids, left-padded with ``PAD_ID``.
    prompt_lengths_B: int32 number of non-pad prompt tokens.
    answers_B: int32 exact answers.
    targets_BxA: int32 gold completions, the answer's digits then
      ``EOS_ID``, right-padded with ``PAD_ID``.
    target_lengths_B: int32 gold completion lengths, including the EOS.
    operands_BxN: int32 operands, in prompt order.
  """
  prompts_BxP: jax.Array
  prompt_lengths_B: jax.Array
  answers_B: jax.Array
  targets_BxA: jax.Array
  target_lengths_B: jax.Array
  operands_BxN: jax.Array


def _fmix32(h, xp):
  """MurmurHash3's 32-bit finaliser, a bijection on uint32."""
  h = h ^ (h >> 16)
  h = h * xp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * xp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _problem_hash(operands_BxN, xp):
  """uint32 hash of each row's operands, independent of their order.

  Written once for numpy and jnp (``xp``), which give the same bits, so the
  host-side enumeration (fallbacks, ``eval_set``) and device sampling agree.
  """
  ops_BxN = xp.sort(xp.asarray(operands_BxN), axis=-1).astype(xp.uint32)
  h_B = xp.full(ops_BxN.shape[:-1], 0x2545F491, xp.uint32)
  for i in range(ops_BxN.shape[-1]):
    h_B = _fmix32((h_B ^ ops_BxN[..., i]) + xp.uint32(0x9E3779B9), xp)
  return h_B


def _is_eval_np(operands_BxN: np.ndarray) -> np.ndarray:
  return (_problem_hash(operands_BxN, np) >> (32 - EVAL_BITS)) == 0


def is_eval_problem(operands_BxN: jax.typing.ArrayLike) -> jax.Array:
  """Whether each problem belongs to the held-out eval split.

  Args:
    operands_BxN: integer operands, one problem per row (any order).

  Returns:
    ``[B]`` bool, True for eval problems (about ``EVAL_FRACTION`` of all).
  """
  _checks.check_named("operands_BxN", operands_BxN, what="is_eval_problem")
  _checks.check_integer("operands_BxN", operands_BxN, what="is_eval_problem")
  return _is_eval_jit(operands_BxN)


@jax.jit
def _is_eval_jit(operands_BxN):
  return (_problem_hash(operands_BxN, jnp) >> (32 - EVAL_BITS)) == 0


def _digit_range(d: int) -> tuple[int, int]:
  """[lo, hi) of the d-digit numbers (0..9 for d = 1)."""
  return (0 if d == 1 else 10 ** (d - 1)), 10 ** d


def _max_answer(op: str, digits: tuple[int, ...]) -> int:
  tops = [_digit_range(d)[1] - 1 for d in digits]
  return sum(tops) if op == "add" else int(np.prod(tops, dtype=object))


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
  """One arithmetic task; frozen and hashable, so usable as a static arg.

  Attributes:
    name: the task's name.
    op: ``"add"`` (``a+b+...=``) or ``"mul"`` (``a*b*...=``).
    num_digits: digits of every operand (of all but the first when
      ``first_digits`` is set).
    num_terms: number of operands N, >= 2.
    prompt_len: P, the padded prompt length; at least the longest prompt.
    answer_len: A, the padded gold completion length; None (the default)
      takes the minimum, the longest answer's digits + 1 for the EOS.
    first_digits: digits of the first operand, or None for ``num_digits``.
  """
  name: str
  op: str
  num_digits: int
  num_terms: int = 2
  prompt_len: int = 16
  answer_len: int | None = None
  first_digits: int | None = None

  def __post_init__(self):
    what = f"ArithmeticTask {self.name!r}"
    _checks.check_choice("op", self.op, OPS, what=what)
    for field, low in (("num_digits", 1), ("num_terms", 2),
                       ("prompt_len", 1)):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(
            f"{what}: {field} must be an int >= {low}, got {value!r}.")
    if self.first_digits is not None and (
        not isinstance(self.first_digits, int) or self.first_digits < 1):
      raise ValueError(f"{what}: first_digits must be None or an int >= 1, "
                       f"got {self.first_digits!r}.")
    longest = _max_answer(self.op, self.term_digits)
    if len(str(longest)) > MAX_ANSWER_DIGITS:
      raise ValueError(
          f"{what}: num_digits={self.num_digits} (first_digits="
          f"{self.first_digits}, num_terms={self.num_terms}) gives answers "
          f"up to {longest}, {len(str(longest))} digits; answers must have "
          f"at most {MAX_ANSWER_DIGITS} digits to fit int32 and the "
          f"verifiers. Use fewer digits or terms.")
    need_p = self.max_prompt_len
    if self.prompt_len < need_p:
      raise ValueError(
          f"{what}: prompt_len={self.prompt_len} is too short for the longest "
          f"prompt ({need_p} characters); pass prompt_len >= {need_p}.")
    need_a = len(str(longest)) + 1
    if self.answer_len is None:
      object.__setattr__(self, "answer_len", need_a)
    elif (not isinstance(self.answer_len, int)
          or self.answer_len < need_a):
      raise ValueError(
          f"{what}: answer_len={self.answer_len!r} is too short for the "
          f"longest answer ({longest}) and its EOS; pass answer_len >= "
          f"{need_a} or None.")
    _fallbacks(self)  # Raises now if a split is empty.

  @property
  def term_digits(self) -> tuple[int, ...]:
    """Digits of each operand, in prompt order."""
    first = self.num_digits if self.first_digits is None else self.first_digits
    return (first,) + (self.num_digits,) * (self.num_terms - 1)

  @property
  def max_prompt_len(self) -> int:
    """Characters in the longest prompt: digits, operators and '='."""
    return sum(self.term_digits) + self.num_terms

  @property
  def num_problems(self) -> int:
    """Number of distinct (ordered) operand tuples."""
    return int(np.prod([np.subtract(*_digit_range(d)[::-1])
                        for d in self.term_digits], dtype=object))

  def sample(self, key: jax.Array, batch_size: int, *,
             split: str = "train") -> TaskBatch:
    """Draws ``batch_size`` problems of one split, uniformly; jittable.

    Args:
      key: a PRNG key.
      batch_size: B, static.
      split: ``"train"`` or ``"eval"``; train never returns an eval problem
        and eval only eval problems.

    Returns:
      A ``TaskBatch`` with ``P = prompt_len`` and ``A = answer_len``.
    """
    _check_batch_size("sample", "batch_size", batch_size)
    _checks.check_choice("split", split, SPLITS, what="sample")
    return _sample_jit(self, key, int(batch_size), split)

  def eval_set(self, seed: int, size: int) -> TaskBatch:
    """A fixed set of ``size`` distinct eval problems, the same for a seed.

    Small problem spaces (up to 2^20 problems) are enumerated and ``size``
    eval problems drawn without replacement; larger ones are sampled and
    duplicates dropped. Not jittable (the set is built once).

    Args:
      seed: integer seed.
      size: number of problems; at most the number of eval problems.

    Returns:
      A ``TaskBatch`` of eval problems.
    """
    _check_batch_size("eval_set", "size", size)
    key = jax.random.key(seed)
    if self.num_problems <= _ENUMERATE_LIMIT:
      all_ops = _enumerate(self, self.num_problems)
      eval_ops = all_ops[_is_eval_np(all_ops)]
      if size > len(eval_ops):
        raise ValueError(
            f"eval_set: size={size} is more than the {len(eval_ops)} eval "
            f"problems of task {self.name!r}; pass size <= {len(eval_ops)}.")
      pick = np.asarray(jax.random.permutation(key, len(eval_ops)))[:size]
      operands = eval_ops[pick]
    else:
      chunk = max(2 * size, 1024)
      seen, rows = set(), []
      for i in range(64):
        draw = _sample_jit(self, jax.random.fold_in(key, i), chunk, "eval")
        for row in np.asarray(draw.operands_BxN).tolist():
          if tuple(row) not in seen and len(rows) < size:
            seen.add(tuple(row))
            rows.append(row)
        if len(rows) == size:
          break
      else:
        raise ValueError(f"eval_set: could not find {size} distinct eval "
                         f"problems of task {self.name!r}; pass a smaller "
                         f"size.")
      operands = np.asarray(rows, np.int32)
    return build_batch(self, jnp.asarray(operands, jnp.int32))


def _check_batch_size(what: str, name: str, value: Any) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or (
      value < 1):
    raise ValueError(f"{what}: {name} must be a static int >= 1, got "
                     f"{value!r}.")


def _enumerate(task: ArithmeticTask, count: int) -> np.ndarray:
  """The first ``count`` operand tuples in lexicographic order, [count, N]."""
  ranges = [_digit_range(d) for d in task.term_digits]
  idx = np.unravel_index(np.arange(count), [hi - lo for lo, hi in ranges])
  return np.stack([i + lo for i, (lo, _) in zip(idx, ranges)],
                  axis=-1).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _fallbacks(task: ArithmeticTask) -> dict[str, tuple[int, ...]]:
  """A fixed problem of each split, for rows where rejection missed."""
  ops = _enumerate(task, min(task.num_problems, _FALLBACK_SEARCH))
  is_eval = _is_eval_np(ops)
  out = {}
  for split, member in (("train", ~is_eval), ("eval", is_eval)):
    if not member.any():
      raise ValueError(
          f"ArithmeticTask {task.name!r}: no {split} problem among the first "
          f"{len(ops)} problems, so the held-out split is degenerate; use "
          f"more digits or terms.")
    out[split] = tuple(int(x) for x in ops[np.argmax(member)])
  return out


def _sample_operands(task: ArithmeticTask, key: jax.Array, batch_size: int,
                     split: str, rounds: int) -> jax.Array:
  """``[B, N]`` int32 operands of ``split``: rejection, then the fallback."""
  ranges = [_digit_range(d) for d in task.term_digits]
  lo_N = jnp.asarray([lo for lo, _ in ranges], jnp.int32)
  hi_N = jnp.asarray([hi for _, hi in ranges], jnp.int32)
  n = len(ranges)
  cands_RxBxN = jax.random.randint(
      key, (rounds, batch_size, n), lo_N[None, None, :], hi_N[None, None, :],
      dtype=jnp.int32)
  want_eval = split == "eval"
  hit_RxB = is_eval_problem(cands_RxBxN.reshape(-1, n)).reshape(
      rounds, batch_size) == want_eval
  first_B = jnp.argmax(hit_RxB, axis=0)
  chosen_BxN = cands_RxBxN[first_B, jnp.arange(batch_size)]
  fallback_BxN = jnp.broadcast_to(
      jnp.asarray(_fallbacks(task)[split], jnp.int32)[None, :],
      (batch_size, n))
  found_B = jnp.any(hit_RxB, axis=0)
  return jnp.where(found_B[:, None], chosen_BxN, fallback_BxN)


# One compiled program per (task, batch size, split), also when called eagerly.
@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _sample_jit(task, key, batch_size, split):
  operands_BxN = _sample_operands(task, key, batch_size, split,
                                  SAMPLE_ROUNDS[split])
  return _build_jit(task, operands_BxN)


def _num_digits(x_B: jax.Array) -> jax.Array:
  """Decimal digits of non-negative int32 values (1 for 0)."""
  pows_K = jnp.asarray(_POW10[1:])
  return 1 + jnp.sum(x_B[:, None] >= pows_K[None, :], axis=-1,
                     dtype=jnp.int32)


def build_batch(task: ArithmeticTask,
                operands_BxN: jax.typing.ArrayLike) -> TaskBatch:
  """Builds prompts, answers and gold completions from operands; jittable.

  Args:
    task: the task, which fixes the operator, P and A.
    operands_BxN: int operands in prompt order, within the task's ranges.

  Returns:
    The ``TaskBatch``.
  """
  what = "build_batch"
  sizes = _checks.check_named("operands_BxN", operands_BxN, what=what)
  _checks.check_integer("operands_BxN", operands_BxN, what=what)
  if not isinstance(task, ArithmeticTask):
    raise ValueError(f"{what}: task must be an ArithmeticTask, e.g. "
                     f"make_task('add2'), got {type(task).__name__}.")
  if sizes["N"] != task.num_terms:
    raise ValueError(f"{what}: operands_BxN must have N = num_terms = "
                     f"{task.num_terms} columns, got {sizes['N']}.")
  return _build_jit(task, jnp.asarray(operands_BxN, jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def _build_jit(task: ArithmeticTask, operands_BxN: jax.Array) -> TaskBatch:
  """``build_batch`` without the checks, compiled once per task and shape."""
  b, p, a = operands_BxN.shape[0], task.prompt_len, task.answer_len
  if task.op == "add":
    answers_B = jnp.sum(operands_BxN, axis=-1, dtype=jnp.int32)
  else:
    answers_B = jnp.prod(operands_BxN, axis=-1, dtype=jnp.int32)

  # The prompt's characters, each operand at its full width with the leading
  # positions past its real digit count marked invalid, then left-packed.
  op_id = int(CHAR_TO_ID[ord(_OP_CHAR[task.op])])
  eq_id = int(CHAR_TO_ID[ord("=")])
  pieces, valid = [], []
  for i, width in enumerate(task.term_digits):
    x_B = operands_BxN[:, i]
    pows_D = jnp.asarray(_POW10[width - 1::-1])  # 10^(width-1) .. 1
    pieces.append(DIGIT0_ID + (x_B[:, None] // pows_D[None, :]) % 10)
    valid.append(jnp.arange(width)[None, :]
                 >= (width - _num_digits(x_B))[:, None])
    sep = op_id if i < task.num_terms - 1 else eq_id
    pieces.append(jnp.full((b, 1), sep, jnp.int32))
    valid.append(jnp.ones((b, 1), bool))
  chars_BxK = jnp.concatenate(pieces, axis=1).astype(jnp.int32)
  valid_BxK = jnp.concatenate(valid, axis=1)
  # A valid character goes to P minus the number of valid ones from it to the
  # end, so the last ('=') lands at P - 1; invalid ones go out of bounds.
  from_end_BxK = jnp.cumsum(valid_BxK[:, ::-1].astype(jnp.int32),
                            axis=1)[:, ::-1]
  dest_BxK = jnp.where(valid_BxK, p - from_end_BxK, p)
  rows_BxK = jnp.broadcast_to(jnp.arange(b)[:, None], dest_BxK.shape)
  prompts_BxP = jnp.full((b, p), PAD_ID, jnp.int32).at[
      rows_BxK, dest_BxK].set(chars_BxK, mode="drop")
  prompt_lengths_B = jnp.sum(valid_BxK, axis=1, dtype=jnp.int32)

  # Gold completion: position i < n holds the digit of 10^(n - 1 - i).
  n_B = _num_digits(answers_B)
  i_A = jnp.arange(a, dtype=jnp.int32)
  exp_BxA = jnp.clip(n_B[:, None] - 1 - i_A[None, :], 0, MAX_ANSWER_DIGITS)
  digit_BxA = (answers_B[:, None] // jnp.asarray(_POW10)[exp_BxA]) % 10
  targets_BxA = jnp.where(
      i_A[None, :] < n_B[:, None], DIGIT0_ID + digit_BxA,
      jnp.where(i_A[None, :] == n_B[:, None], EOS_ID, PAD_ID)
  ).astype(jnp.int32)
  return TaskBatch(prompts_BxP, prompt_lengths_B, answers_B, targets_BxA,
                   n_B + 1, operands_BxN)


def sft_batch(batch: TaskBatch) -> tuple[jax.Array, jax.Array]:
  """Supervised sequences: the prompt followed by the gold completion.

  Layout, ``S = P + A``: positions ``[0, P)`` are the prompt exactly as in
  ``batch.prompts_BxP`` (left-padded, ending with '=' at ``P - 1``); the
  completion starts at position ``P`` with the answer's first digit, then
  the EOS, then ``PAD_ID`` up to ``S``. The loss mask is True on the
  completion's digits and its EOS only. For next-token training feed
  ``tokens_BxS[:, :-1]`` and score the predictions against
  ``tokens_BxS[:, 1:]`` under ``loss_mask_BxS[:, 1:]``; non-pad tokens are
  ``tokens_BxS != PAD_ID``.

  Args:
    batch: a ``TaskBatch``.

  Returns:
    ``(tokens_BxS int32, loss_mask_BxS bool)``.
  """
  b, p = batch.prompts_BxP.shape
  a = batch.targets_BxA.shape[1]
  tokens_BxS = jnp.concatenate([batch.prompts_BxP, batch.targets_BxA], axis=1)
  target_mask_BxA = (jnp.arange(a)[None, :]
                     < batch.target_lengths_B[:, None])
  loss_mask_BxS = jnp.concatenate(
      [jnp.zeros((b, p), bool), target_mask_BxA], axis=1)
  return tokens_BxS, loss_mask_BxS


TASKS = {
    t.name: t for t in (
        ArithmeticTask("add2", "add", num_digits=2),
        ArithmeticTask("add3", "add", num_digits=3),
        ArithmeticTask("add4", "add", num_digits=4),
        ArithmeticTask("sum3x2", "add", num_digits=2, num_terms=3),
        ArithmeticTask("mul1", "mul", num_digits=2, first_digits=1),
        ArithmeticTask("mul2", "mul", num_digits=2),
    )
}

# Overriding these recomputes answer_len unless it is overridden too.
_ANSWER_FIELDS = ("op", "num_digits", "num_terms", "first_digits")


def make_task(name: str, /, **overrides: Any) -> ArithmeticTask:
  """A named task from ``TASKS``, with fields optionally overridden.

  Args:
    name: one of ``TASKS``.
    **overrides: ``ArithmeticTask`` fields, e.g. ``prompt_len=24`` (or a
      new ``name=``).

  Returns:
    The validated ``ArithmeticTask``.
  """
  if name not in TASKS:
    raise ValueError(f"make_task: unknown task {name!r}; known tasks: "
                     f"{sorted(TASKS)}.")
  fields = [f.name for f in dataclasses.fields(ArithmeticTask)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"make_task: unknown field(s) {unknown}; ArithmeticTask "
                     f"fields are {fields}.")
  if not overrides:
    return TASKS[name]
  if "answer_len" not in overrides and any(
      k in overrides for k in _ANSWER_FIELDS):
    overrides["answer_len"] = None
  return dataclasses.replace(TASKS[name], **overrides)
