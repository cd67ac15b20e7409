"""Configuration of the "adv" micro-benchmark (experiments/bench_advantages.py).

Times the jitted jaxrl_group advantage estimators against a plain Python
per-group loop (verl style) and vectorised numpy, side by side in one run.
"""

import ml_collections

# Sequence-level estimators timed as ``jax.jit`` on the [B, G] layout.
DEFAULT_ESTIMATORS = "grpo,dr_grpo,rloo,batch_std,gpg,grpo_passk"
# Token-level estimators, timed only where T > 1.
DEFAULT_TOKEN_ESTIMATORS = "reinforce_pp_baseline"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the benchmark configuration.

  Launch from the repository root::

    python experiments/bench_advantages.py
    python experiments/bench_advantages.py --config=configs/bench_adv.py:quick
    python experiments/bench_advantages.py --config.rows=8192 \\
        --config.token_lengths=1 --config.output=/tmp/bench.json

  Args:
    arg: ``None`` (or ``""``/``"full"``) for the full spec grid; ``"quick"``
      for a grid small enough to run in a few seconds (used by the tests).

  Returns:
    A ``ConfigDict`` with the fields below.
  """
  c = ml_collections.ConfigDict()
  # Grid: rows N = B * G, group sizes G, token lengths T (1 = sequence level;
  # T > 1 = verl-style full step on [N, T] token tensors).
  c.rows = (8192, 65536, 524288)
  c.group_sizes = (8, 16)
  c.token_lengths = (1, 1024)
  c.p_success = 0.3  # binary rewards, P(reward = 1)
  c.estimators = DEFAULT_ESTIMATORS  # comma-separated registry names
  c.token_estimators = DEFAULT_TOKEN_ESTIMATORS  # comma-separated, T > 1 only
  # Also timed with an explicit (all-valid) mask_BxG input; the plain "jax"
  # rows take exactly the numpy baseline's inputs (no padding mask).
  c.masked_estimators = "grpo"
  # Also time, at T = 1, every other registered sequence-level estimator
  # (synthetic context inputs where an estimator needs them).
  c.all_sequence_estimators = True
  # Convention preset applied to the estimators it covers ("" for none).
  c.preset = "verl"
  c.group_by = True  # also time "grpo via group_by" on shuffled group ids
  c.seed = 0

  # Timing: timeit-style autorange. Calls are batched so that one repeat
  # lasts >= min_time_s / repeats; the number of repeats is then
  # clip(ceil(min_time_s / repeat_time), min_repeats, repeats) and the median
  # of the repeats is reported.
  c.min_time_s = 0.5
  c.repeats = 7
  # Calls of ~1 s on [524288, 1024] tensors show 3-4x outliers (page faults
  # on the fresh 2 GiB outputs), so even slow calls get 5 repeats; the Python
  # loop (seconds per call, 100x+ off the others) gets 3.
  c.min_repeats = 5
  c.loop_min_repeats = 3
  c.warmup = 1  # untimed calls before timing (jit compiles on the first)

  # The Python loop is slow (seconds per call at N = 524288); larger N skip
  # it with a message in the table.
  c.loop_max_rows = 524288
  c.loop_estimators = "grpo,dr_grpo"  # numpy baselines: the same set
  # group_by is also checked against the loop on shuffled ids up to here
  # (above, against numpy on the sorted rows).
  c.loop_check_max_rows = 65536
  # Memory guard: a (N, T) cell needing more than this many GiB (estimated
  # as mem_bytes_per_element * N * T) is skipped with a message. None: 80%
  # of the memory available when the cell starts.
  c.max_mem_gib = ml_collections.FieldReference(None, field_type=float)
  c.mem_bytes_per_element = 20.0
  c.check_rtol = 1e-5
  c.check_atol = 1e-5

  # Headline ratios: jitted grpo at this cell vs the loop and numpy.
  c.headline_rows = 65536
  c.headline_group_size = 16
  c.headline_token_length = 1
  c.target_vs_loop = 100.0
  c.target_vs_numpy = 3.0

  c.output = "bench_advantages.json"  # JSON path (relative to the cwd)
  c.progress = True  # print each measurement to stderr as it finishes

  if arg in (None, "", "full"):
    return c
  if arg == "quick":
    c.rows = (512, 2048)
    c.group_sizes = (8,)
    c.token_lengths = (1, 32)
    c.min_time_s = 0.01
    c.repeats = 3
    c.min_repeats = 1
    c.loop_min_repeats = 1
    c.loop_max_rows = 2048
    c.loop_check_max_rows = 2048
    c.headline_rows = 2048
    c.headline_group_size = 8
    return c
  raise ValueError(f"unknown config argument {arg!r}; use 'quick' or none.")
