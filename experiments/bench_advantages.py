r"""The "adv" micro-benchmark: jitted estimators vs a Python loop and numpy.

For every cell (rows N = B * G, group size G, token length T) of the grid in
``configs/bench_adv.py`` this times, side by side in one process:

* ``jax``: the jitted jaxrl_group estimators on device-resident inputs,
  ``jax.jit(lambda r, m: tx.update(r, state, mask_BxG=m)[0])`` at T = 1.
  At T > 1 the jitted function is verl's full advantage step: token-level
  rewards ``[N, T]`` (the outcome reward on the last valid token) and the
  response mask ``[N, T]`` in, ``scores = sum_T``, the group estimator, and
  ``adv[:, None] * mask`` out. Token-level estimators (REINFORCE++-baseline)
  take the response mask as ``token_mask_BxGxT`` and run only where T > 1.
* ``jax_group_by``: GRPO on flat rows with shuffled group ids (verl's
  layout): ``A.group_by`` -> ``grpo`` -> ``A.ungroup``, all in one jit.
* ``loop``: a plain Python per-group loop of the kind RL libraries use
  (verl's ``compute_grpo_outcome_advantage``): scores bucketed by group id
  in a ``defaultdict(list)``, per-group numpy mean and unbiased std, then a
  Python loop writing ``(s - mean) / (std + 1e-6)`` row by row.
* ``numpy``: the vectorised numpy version on ``[N / G, G]``.

Before any timing, the jitted GRPO (and Dr.GRPO) outputs are checked to equal
the loop's and numpy's (``np.testing.assert_allclose``), so the benchmark
never compares different math. Every figure is printed with the 1-minute
load average beside it; the results go to a JSON file.

Run from the repository root::

  python experiments/bench_advantages.py
  python experiments/bench_advantages.py --config=configs/bench_adv.py:quick
"""

import collections
import gc
import math
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

from jaxrl_group import advantages as A
# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG_PATH = os.path.join(_common.REPO_ROOT, "configs",
                                   "bench_adv.py")

# Implementations, in table order, with their table labels.
IMPLS = {
    "loop": "python loop",
    "numpy": "numpy",
    "jax": "jax.jit",
    "jax_masked": "jax.jit + mask",
    "jax_group_by": "jax.jit group_by",
}
GRPO_EPS = 1e-6  # verl's epsilon, also jaxrl_group's grpo default


def _split(names: str) -> list[str]:
  return [s.strip() for s in names.split(",") if s.strip()]


# --------------------------------------------------------------------------
# Inputs.


def make_inputs(n: int, t: int, p_success: float,
                seed: int) -> dict[str, np.ndarray]:
  """Host inputs of one (N, T) cell, shared by every G and implementation.

  Args:
    n: rows N.
    t: token length T; 1 means sequence level (scores only).
    p_success: probability of a reward of 1 (binary rewards).
    seed: random seed (combined with N and T).

  Returns:
    ``scores_N`` (float32 0/1 rewards) and, when ``t > 1``,
    ``token_rewards_NxT`` (float32, the reward on the last valid token) and
    ``response_mask_NxT`` (bool, a prefix of random length in [1, T]).
  """
  rng = np.random.default_rng([seed, n, t])
  scores_N = (rng.random(n) < p_success).astype(np.float32)
  out = {"scores_N": scores_N}
  if t > 1:
    lengths_N = rng.integers(1, t + 1, size=n)
    token_rewards_NxT = np.zeros((n, t), np.float32)
    token_rewards_NxT[np.arange(n), lengths_N - 1] = scores_N
    out["token_rewards_NxT"] = token_rewards_NxT
    out["response_mask_NxT"] = np.arange(t)[None, :] < lengths_N[:, None]
  return out


def contiguous_ids(n: int, g: int) -> np.ndarray:
  """Group ids ``[N]`` with the G rows of each group next to each other."""
  return np.arange(n, dtype=np.int32) // g


def shuffled_ids(n: int, g: int, seed: int) -> np.ndarray:
  """Group ids ``[N]`` of G rows each, in random row order (verl layout)."""
  rng = np.random.default_rng([seed, n, g, 1])
  return rng.permutation(contiguous_ids(n, g)).astype(np.int32)


# --------------------------------------------------------------------------
# Baselines.


def loop_advantages(scores_N: np.ndarray, group_ids_N: np.ndarray, *,
                    norm_by_std: bool = True,
                    eps: float = GRPO_EPS) -> np.ndarray:
  """GRPO (or Dr.GRPO) the way per-group Python loops compute it.

  Rows are bucketed by id in a ``defaultdict(list)``; each bucket gets a
  numpy mean and unbiased std (a one-row group: mean 0, std 1); a second
  Python loop writes every row's advantage.

  Args:
    scores_N: float32 scores, one per row, rows in any order.
    group_ids_N: the group id of each row.
    norm_by_std: divide by ``std + eps`` (GRPO); False gives Dr.GRPO.
    eps: added to the std.

  Returns:
    float32 advantages ``[N]``.
  """
  n = scores_N.shape[0]
  buckets = collections.defaultdict(list)
  for i in range(n):
    buckets[group_ids_N[i]].append(scores_N[i])
  means, stds = {}, {}
  for gid, values in buckets.items():
    if len(values) == 1:
      means[gid], stds[gid] = np.float32(0.0), np.float32(1.0)
    else:
      group = np.stack(values)
      means[gid] = np.mean(group)
      stds[gid] = np.std(group, ddof=1)
  adv_N = np.empty_like(scores_N)
  if norm_by_std:
    for i in range(n):
      gid = group_ids_N[i]
      adv_N[i] = (scores_N[i] - means[gid]) / (stds[gid] + eps)
  else:
    for i in range(n):
      adv_N[i] = scores_N[i] - means[group_ids_N[i]]
  return adv_N


def numpy_advantages(scores_N: np.ndarray, group_size: int, *,
                     norm_by_std: bool = True,
                     eps: float = GRPO_EPS) -> np.ndarray:
  """Vectorised numpy GRPO (or Dr.GRPO) on contiguous groups of G rows.

  Args:
    scores_N: float32 scores with the G rows of a group next to each other.
    group_size: G.
    norm_by_std: divide by ``std(ddof=1) + eps``; False gives Dr.GRPO.
    eps: added to the std.

  Returns:
    float32 advantages ``[N]``.
  """
  scores_BxG = scores_N.reshape(-1, group_size)
  adv_BxG = scores_BxG - scores_BxG.mean(axis=1, keepdims=True)
  if norm_by_std:
    adv_BxG = adv_BxG / (scores_BxG.std(axis=1, ddof=1, keepdims=True) + eps)
  return adv_BxG.reshape(-1)


def loop_step(token_rewards_NxT: np.ndarray, response_mask_NxT: np.ndarray,
              group_ids_N: np.ndarray, **kwargs) -> np.ndarray:
  """verl-style full step with the loop: sum over T, loop, ``adv * mask``.

  Args:
    token_rewards_NxT: float32 token-level rewards.
    response_mask_NxT: bool mask of valid response tokens.
    group_ids_N: the group id of each row.
    **kwargs: passed to ``loop_advantages``.

  Returns:
    float32 advantages ``[N, T]``.
  """
  adv_N = loop_advantages(token_rewards_NxT.sum(axis=-1), group_ids_N,
                          **kwargs)
  return adv_N[:, None] * response_mask_NxT


def numpy_step(token_rewards_NxT: np.ndarray, response_mask_NxT: np.ndarray,
               group_size: int, **kwargs) -> np.ndarray:
  """verl-style full step in numpy: sum over T, group statistics, broadcast.

  Args:
    token_rewards_NxT: float32 token-level rewards, contiguous groups.
    response_mask_NxT: bool mask of valid response tokens.
    group_size: G.
    **kwargs: passed to ``numpy_advantages``.

  Returns:
    float32 advantages ``[N, T]``.
  """
  adv_N = numpy_advantages(token_rewards_NxT.sum(axis=-1), group_size,
                           **kwargs)
  return adv_N[:, None] * response_mask_NxT


# --------------------------------------------------------------------------
# jaxrl_group under jit.


PIECES = ("batch_whiten", "center", "clip", "scale")  # parts, not estimators


def sequence_estimators() -> list[str]:
  """Every registered sequence-level estimator on ``[B, G]`` rewards."""
  return [n for n, i in sorted(A.INFO.items())
          if not i.token_level and i.input_name == "rewards_BxG"
          and n not in PIECES]


def bench_ctx(name: str, b: int, g: int, t: int,
              seed: int) -> dict[str, jax.Array]:
  """Synthetic context inputs for ``A.INFO[name].requires``, on device.

  Shapes come from the key's suffix; bool for masks (all valid), small
  ints for ids, the step as an int scalar, floats in [0.1, 1) otherwise.
  """
  rng = np.random.default_rng([seed, b, g, t])
  sizes = {"B": b, "G": g, "T": t}
  ctx = {}
  for key in A.INFO[name].requires:
    if key == "step":
      ctx[key] = jnp.asarray(3, jnp.int32)
      continue
    shape = tuple(sizes.get(d, 2) for d in key.rsplit("_", 1)[-1].split("x"))
    if "mask" in key:
      x = np.ones(shape, bool)
    elif "ids" in key:
      x = rng.integers(0, 3, size=shape).astype(np.int32)
    else:
      x = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    ctx[key] = jax.device_put(x)
  return ctx


def make_transform(name: str, preset: str) -> tuple[A.AdvantageTransform, str]:
  """Builds a registered estimator, with ``preset`` where it covers ``name``.

  Returns:
    ``(transform, preset_used)``; ``preset_used`` is ``"default"`` when the
    preset is empty or has no conventions for ``name``.
  """
  if preset and name in A.PRESETS.get(preset, {}):
    return A.get(name, preset=preset), preset
  return A.get(name), "default"


def jax_estimator_fn(tx: A.AdvantageTransform, *, n: int, g: int, t: int,
                     token_level: bool,
                     masked: bool = False) -> Callable[..., jax.Array]:
  """The jitted function timed for one estimator.

  Args:
    tx: the transform.
    n: rows N.
    g: group size G.
    t: token length T.
    token_level: the estimator returns ``[B, G, T]`` (needs the token mask).
      Every jitted function also takes the estimator's context inputs as a
      dict (from ``bench_ctx``), after the rewards.
    masked: pass a ``mask_BxG`` input (all valid here). Without it the
      estimator sees exactly the numpy baseline's inputs (no padding mask).

  Returns:
    At T = 1, ``f(rewards_BxG[, mask_BxG]) -> adv_BxG``. At T > 1,
    ``f(token_rewards_NxT, response_mask_NxT[, mask_BxG]) -> adv_NxT``: the
    full verl-style step (sum over T, estimator, broadcast times the mask).
  """
  b = n // g
  state = tx.init(jnp.zeros((b, g), jnp.float32))
  if t == 1:
    if masked:
      return jax.jit(lambda r, c, m: tx.update(r, state, mask_BxG=m, **c)[0])
    return jax.jit(lambda r, c: tx.update(r, state, **c)[0])

  def step(token_rewards_NxT, response_mask_NxT, ctx, mask_BxG=None):
    scores_BxG = jnp.sum(token_rewards_NxT, axis=-1).reshape(b, g)
    if token_level:
      adv_BxGxT, _ = tx.update(
          scores_BxG, state, mask_BxG=mask_BxG,
          **{**ctx, "token_mask_BxGxT": response_mask_NxT.reshape(b, g, t)})
      return adv_BxGxT.reshape(n, t)
    adv_BxG, _ = tx.update(scores_BxG, state, mask_BxG=mask_BxG, **ctx)
    return (adv_BxG.reshape(n)[:, None]
            * response_mask_NxT.astype(adv_BxG.dtype))

  return jax.jit(step)


def jax_group_by_fn(tx: A.AdvantageTransform, *, n: int, g: int,
                    t: int) -> Callable[..., jax.Array]:
  """Jitted ``group_by`` -> estimator -> ``ungroup`` on flat rows.

  Args:
    tx: a sequence-level transform (GRPO).
    n: rows N.
    g: group size G (the padded group size of ``group_by``).
    t: token length T.

  Returns:
    At T = 1, ``f(group_ids_N, scores_N) -> adv_N``; at T > 1,
    ``f(group_ids_N, token_rewards_NxT, response_mask_NxT) -> adv_NxT``.
  """
  b = n // g
  state = tx.init(jnp.zeros((b, g), jnp.float32))

  def advantages_N(group_ids_N, scores_N):
    grouped = A.group_by(group_ids_N, scores_N, max_group_size=g,
                         num_groups=b)
    adv_BxG, _ = tx.update(grouped.arrays[0], state,
                           mask_BxG=grouped.mask_BxG)
    return A.ungroup(adv_BxG, grouped)

  if t == 1:
    return jax.jit(advantages_N)

  def step(group_ids_N, token_rewards_NxT, response_mask_NxT):
    adv_N = advantages_N(group_ids_N, jnp.sum(token_rewards_NxT, axis=-1))
    return adv_N[:, None] * response_mask_NxT.astype(adv_N.dtype)

  return jax.jit(step)


# --------------------------------------------------------------------------
# Timing and checks.


def measure(call: Callable[[], Any], *, min_time_s: float, repeats: int,
            min_repeats: int, warmup: int) -> dict[str, Any]:
  """Median seconds per call, timeit-style (autorange, then repeats).

  Args:
    call: a thunk that runs one call to completion (blocking on results).
    min_time_s: the timed time to aim for in total.
    repeats: the most repeats (batches of calls) to take.
    min_repeats: the fewest repeats, however slow a call is.
    warmup: untimed calls first.

  Returns:
    ``seconds`` (median per call), ``number`` (calls per repeat) and
    ``samples_s`` (seconds per call of each repeat).
  """

  def batch(number):
    start = time.perf_counter()
    for _ in range(number):
      call()
    return time.perf_counter() - start

  for _ in range(warmup):
    call()
  target = min_time_s / max(repeats, 1)
  number, steps = 1, (1, 2, 5)
  scale = 1
  while True:
    elapsed = batch(number)
    if elapsed >= target:
      break
    # Grow like timeit.autorange: 1, 2, 5, 10, 20, 50, ...
    i = steps.index(number // scale) + 1
    if i == len(steps):
      i, scale = 0, scale * 10
    number = steps[i] * scale
  samples = [elapsed / number]
  n_repeats = min(max(math.ceil(min_time_s / elapsed), min_repeats), repeats)
  for _ in range(n_repeats - 1):
    samples.append(batch(number) / number)
  return {"seconds": statistics.median(samples), "number": number,
          "samples_s": samples}


def assert_close(actual, desired, *, rtol: float, atol: float,
                 what: str) -> float:
  """``np.testing.assert_allclose`` in row chunks (tensors may be GiBs).

  Args:
    actual: array ``[N, ...]``.
    desired: array of the same shape.
    rtol: relative tolerance.
    atol: absolute tolerance.
    what: named in the error message.

  Returns:
    The largest absolute difference.

  Raises:
    AssertionError: the arrays differ beyond the tolerances.
  """
  actual, desired = np.asarray(actual), np.asarray(desired)
  if actual.shape != desired.shape:
    raise AssertionError(f"{what}: shapes differ, {actual.shape} vs "
                         f"{desired.shape}.")
  n = actual.shape[0]
  per_row = max(1, int(np.prod(actual.shape[1:])))
  chunk = max(1, (1 << 22) // per_row)
  max_err = 0.0
  for lo in range(0, n, chunk):
    a = actual[lo:lo + chunk].astype(np.float64)
    d = desired[lo:lo + chunk].astype(np.float64)
    diff = np.abs(a - d)
    # The same test as assert_allclose, ~20x faster; assert_allclose judges
    # (and words the error of) any chunk that fails it, NaNs included.
    if not np.all(diff <= atol + rtol * np.abs(d)):
      np.testing.assert_allclose(a, d, rtol=rtol, atol=atol,
                                 err_msg=f"{what} (rows {lo}..)")
    if diff.size:
      max_err = max(max_err, float(np.nanmax(diff)))
  return max_err


def available_gib() -> float:
  """Memory available now, in GiB (Linux ``MemAvailable``; else +inf)."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return float("inf")


# --------------------------------------------------------------------------
# The benchmark.


def _row(impl, estimator, n, g, t, preset="default", **extra):
  row = {"impl": impl, "impl_label": IMPLS[impl], "estimator": estimator,
         "preset": preset, "N": n, "G": g, "T": t, "B": n // g,
         "status": "ok", "skip_reason": None, "us_per_call": None,
         "rows_per_s": None, "speedup_vs_loop": None,
         "speedup_vs_numpy": None, "loop_ref": None, "numpy_ref": None,
         "number": None, "repeats": None, "samples_us": None,
         "min_us": None,
         "load_avg_1m": None}
  row.update(extra)
  return row


def _skip(impl, estimator, n, g, t, reason, preset="default"):
  return _row(impl, estimator, n, g, t, preset, status="skipped",
              skip_reason=reason, load_avg_1m=_common.load_avg())


def planned_impls(config, n: int, g: int, t: int) -> list[tuple[str, str]]:
  """The (impl, estimator) pairs of one cell, in timing order."""
  del n, g
  loop_names = _split(config.loop_estimators)
  plan = [("loop", e) for e in loop_names]
  plan += [("numpy", e) for e in loop_names]
  names = _split(config.estimators)
  plan += [("jax", e) for e in names]
  if t == 1 and config.all_sequence_estimators:
    plan += [("jax", e) for e in sequence_estimators() if e not in names]
  plan += [("jax_masked", e) for e in _split(config.masked_estimators)]
  if t > 1:
    plan += [("jax", e) for e in _split(config.token_estimators)]
  if config.group_by:
    plan.append(("jax_group_by", "grpo"))
  return plan


def run_cell(config, n: int, g: int, t: int, inputs: dict[str, np.ndarray],
             device_inputs: dict[str, jax.Array]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Checks and times every implementation on one (N, G, T) cell.

  Args:
    config: the benchmark ``ConfigDict``.
    n: rows N.
    g: group size G.
    t: token length T.
    inputs: host inputs from ``make_inputs``.
    device_inputs: the same on the JAX device.

  Returns:
    ``(rows, checks)``: one row dict per (impl, estimator) and one dict per
    correctness check that ran.
  """
  b = n // g
  plan = planned_impls(config, n, g, t)
  if n % g:
    reason = f"N = {n} is not a multiple of G = {g}"
    return [_skip(i, e, n, g, t, reason) for i, e in plan], []
  for impl, name in plan:
    if impl in ("loop", "numpy") and name not in ("grpo", "dr_grpo"):
      raise ValueError(f"loop/numpy baselines exist for grpo and dr_grpo "
                       f"only, got {name!r} in config.loop_estimators.")

  ids_N = contiguous_ids(n, g)
  shuffled_N = shuffled_ids(n, g, config.seed)
  ids_dev_N = jax.device_put(shuffled_N)
  mask_BxG = jax.device_put(np.ones((b, g), bool))
  tol = dict(rtol=config.check_rtol, atol=config.check_atol)
  loop_ok = n <= config.loop_max_rows
  cell = f"N={n} G={g} T={t}"

  if t == 1:
    scores_N = inputs["scores_N"]
    host_args = (scores_N,)
    jax_args = (device_inputs["scores_N"].reshape(b, g),)
    gb_args = (ids_dev_N, device_inputs["scores_N"])
    loop_fn, numpy_fn = loop_advantages, numpy_advantages
  else:
    host_args = (inputs["token_rewards_NxT"], inputs["response_mask_NxT"])
    jax_args = (device_inputs["token_rewards_NxT"],
                device_inputs["response_mask_NxT"])
    gb_args = (ids_dev_N, device_inputs["token_rewards_NxT"],
               device_inputs["response_mask_NxT"])
    loop_fn, numpy_fn = loop_step, numpy_step

  # Build the jitted functions once; the first call (compile) is in the
  # checks below or in the warm-up.
  fns, presets = {}, {}
  for impl, name in plan:
    if impl in ("jax", "jax_masked"):
      tx, presets[(impl, name)] = make_transform(name, config.preset)
      fns[(impl, name)] = jax_estimator_fn(
          tx, n=n, g=g, t=t, token_level=A.INFO[name].token_level,
          masked=impl == "jax_masked")
    elif impl == "jax_group_by":
      tx, presets[(impl, name)] = make_transform(name, config.preset)
      fns[(impl, name)] = jax_group_by_fn(tx, n=n, g=g, t=t)

  args_of = {"jax": jax_args, "jax_masked": jax_args + (mask_BxG,),
             "jax_group_by": gb_args}

  def call_args(impl, name):
    args = args_of[impl]
    if impl == "jax_group_by":
      return args
    ctx = bench_ctx(name, b, g, t, config.seed)
    if impl == "jax_masked":
      return args[:-1] + (ctx, args[-1])
    return args + (ctx,)

  def thunk(impl, name):
    """A call that runs to completion, for the timer."""
    if impl in args_of:
      fn, args = fns[(impl, name)], call_args(impl, name)
      return lambda: fn(*args).block_until_ready()
    kwargs = {"norm_by_std": name == "grpo"}
    if impl == "loop":
      return lambda: loop_fn(*host_args, ids_N, **kwargs)
    return lambda: numpy_fn(*host_args, g, **kwargs)

  def jax_out(impl, name):
    """The jitted output as numpy, [N] or [N, T] (row order of the input)."""
    out = fns[(impl, name)](*call_args(impl, name))
    out = np.asarray(out)
    return out.reshape(n, -1) if t > 1 else out.reshape(n)

  # Correctness first: the jitted estimators must compute the loop's math.
  checks = []

  def record(what, actual, desired):
    err = assert_close(actual, desired, what=f"{cell}: {what}", **tol)
    checks.append({"N": n, "G": g, "T": t, "check": what,
                   "max_abs_err": err, "passed": True})

  for name in ("grpo", "dr_grpo"):
    kwargs = {"norm_by_std": name == "grpo"}
    have_jax = ("jax", name) in fns
    have_np = ("numpy", name) in plan
    have_loop = ("loop", name) in plan and loop_ok
    if not (have_jax or have_np or have_loop):
      continue
    ref = numpy_fn(*host_args, g, **kwargs)
    got = jax_out("jax", name) if have_jax else None
    if have_jax:
      record(f"jax {name} == numpy {name}", got, ref)
    if ("jax_masked", name) in fns:
      record(f"jax {name} with mask == numpy {name}",
             jax_out("jax_masked", name), ref)
    if have_loop:
      loop_out = loop_fn(*host_args, ids_N, **kwargs)
      record(f"loop {name} == numpy {name}", loop_out, ref)
      if have_jax:
        record(f"jax {name} == loop {name}", got, loop_out)
      del loop_out
    del got
    if name == "grpo" and ("jax_group_by", "grpo") in fns:
      # Reference on shuffled rows: numpy on the rows sorted by id, put back.
      order = np.argsort(shuffled_N, kind="stable")
      sorted_args = tuple(x[order] for x in host_args)
      gb_ref = np.empty_like(ref)
      gb_ref[order] = numpy_fn(*sorted_args, g, **kwargs)
      del sorted_args
      got = jax_out("jax_group_by", "grpo")
      record("jax group_by grpo == numpy grpo (shuffled ids)", got, gb_ref)
      if n <= config.loop_check_max_rows:
        record("jax group_by grpo == loop grpo (shuffled ids)", got,
               loop_fn(*host_args, shuffled_N, **kwargs))
      del got, gb_ref
      grouped = A.group_by(shuffled_N, max_group_size=g, num_groups=b)
      if int(grouped.grouping.num_dropped):
        raise AssertionError(f"{cell}: group_by dropped rows.")
    del ref
    gc.collect()

  rows = []
  for impl, name in plan:
    preset = presets.get((impl, name), "default")
    if impl == "loop" and not loop_ok:
      rows.append(_skip(impl, name, n, g, t,
                        f"loop skipped: N > loop_max_rows = "
                        f"{config.loop_max_rows}", preset))
      continue
    jitted = impl in args_of
    m = measure(thunk(impl, name), min_time_s=config.min_time_s,
                repeats=config.repeats,
                min_repeats=(config.loop_min_repeats if impl == "loop"
                             else config.min_repeats),
                warmup=config.warmup if jitted else 0)
    load = _common.load_avg()
    us = m["seconds"] * 1e6
    rows.append(_row(impl, name, n, g, t, preset, us_per_call=us,
                     rows_per_s=n / m["seconds"], number=m["number"],
                     repeats=len(m["samples_s"]),
                     samples_us=[s * 1e6 for s in m["samples_s"]],
                     min_us=min(m["samples_s"]) * 1e6,
                     load_avg_1m=load))
    _common.progress(config, f"  {cell} {IMPLS[impl]:>16} {name:<22} "
                     f"{us:>14,.1f} us/call  load {load:.2f}")
    gc.collect()
  fns.clear()
  return rows, checks


def add_speedups(rows: list[dict[str, Any]]) -> None:
  """Fills ``speedup_vs_loop`` / ``speedup_vs_numpy`` in place.

  The reference is the loop (numpy) row of the same cell and estimator when
  there is one, else that of grpo; its name goes in ``loop_ref`` /
  ``numpy_ref``.
  """
  timed = {(r["impl"], r["estimator"], r["N"], r["G"], r["T"]): r
           for r in rows if r["status"] == "ok"}
  for r in rows:
    if r["status"] != "ok":
      continue
    for impl in ("loop", "numpy"):
      for ref_name in (r["estimator"], "grpo"):
        ref = timed.get((impl, ref_name, r["N"], r["G"], r["T"]))
        if ref is not None:
          r[f"speedup_vs_{impl}"] = ref["us_per_call"] / r["us_per_call"]
          r[f"{impl}_ref"] = ref_name
          break


def headline(rows: list[dict[str, Any]], config) -> dict[str, Any]:
  """The two headline ratios of jitted grpo at the configured cell."""
  cell = (config.headline_rows, config.headline_group_size,
          config.headline_token_length)
  out = {"N": cell[0], "G": cell[1], "T": cell[2],
         "speedup_vs_loop": None, "speedup_vs_numpy": None,
         "target_vs_loop": config.target_vs_loop,
         "target_vs_numpy": config.target_vs_numpy}
  for r in rows:
    if (r["impl"], r["estimator"], r["N"], r["G"], r["T"]) == (
        "jax", "grpo") + cell and r["status"] == "ok":
      out["us_per_call"] = r["us_per_call"]
      out["speedup_vs_loop"] = r["speedup_vs_loop"]
      out["speedup_vs_numpy"] = r["speedup_vs_numpy"]
    if (r["impl"], r["estimator"], r["N"], r["G"], r["T"]) == (
        "jax_masked", "grpo") + cell and r["status"] == "ok":
      out["masked_speedup_vs_loop"] = r["speedup_vs_loop"]
      out["masked_speedup_vs_numpy"] = r["speedup_vs_numpy"]
  return out


def run_benchmark(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the whole grid; returns ``{"metadata", "rows", "checks", ...}``.

  Args:
    config: from ``configs/bench_adv.py``.

  Returns:
    A JSON-serialisable dict: ``metadata``, ``rows`` (one per impl,
    estimator and cell; skipped ones carry ``skip_reason``), ``checks`` (the
    correctness checks that passed; a failing one raises) and ``headline``.
  """
  start = time.perf_counter()
  meta = _common.metadata(config)
  meta["load_avg_1m_start"] = _common.load_avg()
  for name in (_split(config.estimators) + _split(config.token_estimators)):
    A.info(name)  # raises on an unknown name before anything runs
  rows, checks = [], []
  for t in config.token_lengths:
    for n in config.rows:
      need_gib = config.mem_bytes_per_element * n * t / 2**30
      limit = config.max_mem_gib
      if limit is None:
        gc.collect()
        limit = 0.8 * available_gib()
      if need_gib > limit:
        reason = (f"needs ~{need_gib:.1f} GiB (est.), over the "
                  f"{limit:.1f} GiB limit")
        _common.progress(config, f"N={n} T={t}: skipped, {reason}")
        for g in config.group_sizes:
          rows += [_skip(i, e, n, g, t, reason)
                   for i, e in planned_impls(config, n, g, t)]
        continue
      inputs = make_inputs(n, t, config.p_success, config.seed)
      device_inputs = {k: jax.device_put(v) for k, v in inputs.items()}
      for g in config.group_sizes:
        _common.progress(config, f"N={n} G={g} T={t}")
        cell_rows, cell_checks = run_cell(config, n, g, t, inputs,
                                          device_inputs)
        rows += cell_rows
        checks += cell_checks
      del inputs, device_inputs
      gc.collect()
  add_speedups(rows)
  meta["load_avg_1m_end"] = _common.load_avg()
  meta["total_time_s"] = time.perf_counter() - start
  return {"metadata": meta, "rows": rows, "checks": checks,
          "headline": headline(rows, config)}


# --------------------------------------------------------------------------
# Output.


def _fmt_x(x):
  if x is None:
    return "—"
  if x >= 100:
    return f"{x:,.0f}×"
  return f"{x:.1f}×" if x >= 10 else f"{x:.3g}×"


def format_table(rows: list[dict[str, Any]]) -> str:
  """The results as a markdown table (skipped rows say why)."""
  order = {k: i for i, k in enumerate(IMPLS)}
  rows = sorted(rows, key=lambda r: (r["T"], r["N"], r["G"],
                                     order[r["impl"]]))
  lines = ["| impl | estimator | N | G | T | µs/call | rows/s | "
           "speedup vs loop | speedup vs numpy | load avg |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r["status"] == "ok":
      us, rps = f"{r['us_per_call']:,.1f}", f"{r['rows_per_s']:.3g}"
    else:
      us, rps = f"SKIPPED: {r['skip_reason']}", "—"
    est = r["estimator"]
    if r["preset"] not in ("default", None):
      est += f" ({r['preset']})"
    vs_loop, vs_np = _fmt_x(r["speedup_vs_loop"]), _fmt_x(
        r["speedup_vs_numpy"])
    if r["loop_ref"] not in (None, r["estimator"]):
      vs_loop += f" (vs {r['loop_ref']})"
    if r["numpy_ref"] not in (None, r["estimator"]):
      vs_np += f" (vs {r['numpy_ref']})"
    lines.append(f"| {r['impl_label']} | {est} | {r['N']:,} | {r['G']} | "
                 f"{r['T']} | {us} | {rps} | {vs_loop} | {vs_np} | "
                 f"{r['load_avg_1m']:.2f} |")
  return "\n".join(lines)


def format_summary(results: dict[str, Any]) -> str:
  """The headline ratios, the checks and the run time, as text."""
  h = results["headline"]
  meta = results["metadata"]
  cell = f"N = {h['N']:,}, G = {h['G']}, T = {h['T']}"
  lines = [f"Headline (jitted grpo, {cell}):"]
  for key, target, ref in (("speedup_vs_loop", h["target_vs_loop"], "loop"),
                           ("speedup_vs_numpy", h["target_vs_numpy"],
                            "numpy")):
    v = h[key]
    if v is None:
      lines.append(f"  vs {ref}: not measured in this configuration")
    else:
      lines.append(f"  vs {ref}: {v:,.1f}× ({_common.verdict(v, target)} the "
                   f"target ≥ {target:g}×)")
  if h.get("masked_speedup_vs_numpy") is not None:
    lines.append(f"  with an explicit mask_BxG input: "
                 f"{h['masked_speedup_vs_loop']:,.1f}× vs loop, "
                 f"{h['masked_speedup_vs_numpy']:,.1f}× vs numpy (which "
                 "takes no mask)")
  lines.append(
      "Notes: speedups are against the loop / numpy of the same estimator,"
      " else of grpo ('vs grpo'); '(verl)' marks preset='verl'; rows with"
      " T > 1 time the full verl-style step on [N, T] tensors; µs/call is"
      " the median of the repeats (each repeat's in the JSON).")
  n_checks = len(results["checks"])
  worst = max((c["max_abs_err"] for c in results["checks"]), default=0.0)
  lines.append(f"Correctness: {n_checks} checks passed (max abs diff "
               f"{worst:.2e}).")
  skipped = [r for r in results["rows"] if r["status"] != "ok"]
  if skipped:
    lines.append(f"Skipped: {len(skipped)} rows (reasons in the table).")
  lines.append(_common.machine_summary(meta))
  return "\n".join(lines)


def run_and_report(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the benchmark, prints the table and summary, writes the JSON."""
  return _common.run_and_report(config, run_benchmark, format_table,
                                format_summary)


if __name__ == "__main__":
  _common.run_main(DEFAULT_CONFIG_PATH, run_and_report)
