"""What the benchmark scripts share: setup, timing, FLOPs and output.

Importing this module sets ``JAX_PLATFORMS`` to ``cpu`` unless it is set and
makes ``jaxrl_group`` importable from the checkout this file is in when it is
not installed, so the scripts import it before anything that imports jax.
"""

import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
  import jaxrl_group  # pylint: disable=unused-import
except ImportError:  # not pip-installed: use the checkout this file is in
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jaxlib
import ml_collections
import numpy as np

from jaxrl_group import models
# pylint: enable=g-import-not-at-top,wrong-import-position


def progress(config: ml_collections.ConfigDict, msg: str) -> None:
  """Prints ``msg`` to stderr unless ``config.progress`` is False."""
  if config.get("progress", True):
    print(msg, file=sys.stderr, flush=True)


def load_avg() -> float:
  """The 1-minute load average."""
  return os.getloadavg()[0]


# --------------------------------------------------------------------------
# FLOPs.


def prefill_flops(cfg: models.ModelConfig, b: int, p: int) -> int:
  """Forward FLOPs of prefilling ``b`` prompts of width ``p``.

  Position i attends to i + 1 keys (left padding included, as it is
  computed); only the last position is unembedded.
  """
  unembed = 2 * cfg.d_model * cfg.vocab_size
  per_prompt = sum(cfg.flops_per_token(i + 1) - unembed for i in range(p))
  return b * (per_prompt + unembed)


def rollout_flops(cfg: models.ModelConfig, b: int, g: int, p: int,
                  longest: int) -> int:
  """Forward FLOPs of one rollout (see the scripts' module docstrings).

  Args:
    cfg: the model.
    b: prompts B (each prefilled once).
    g: samples per prompt G.
    p: prompt width P.
    longest: tokens of the longest sample (decode steps + 1).

  Returns:
    FLOPs of the prefill and the ``longest - 1`` decode steps.
  """
  decode = sum(cfg.flops_per_token(p + s + 1) for s in range(longest - 1))
  return prefill_flops(cfg, b, p) + b * g * decode


# --------------------------------------------------------------------------
# Timing.


def time_call(call: Callable[[], Any], cpu_time: bool = False
              ) -> tuple[float, float | None, Any, float]:
  """Runs ``call`` once.

  Args:
    call: a thunk that runs one call to completion (blocking).
    cpu_time: also measure the process's CPU time (all threads), which
      other jobs on a shared machine disturb less than the wall time.

  Returns:
    ``(seconds, cpu_seconds, its result, load average)``; ``cpu_seconds``
    is None without ``cpu_time``.
  """
  start = time.perf_counter()
  cpu = time.process_time() if cpu_time else None
  out = call()
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu if cpu_time else None
  return seconds, cpu_seconds, out, load_avg()


def time_interleaved(calls: dict[str, Callable[[], Any]], repeats: int,
                     warmup: int = 0, cpu_time: bool = False
                     ) -> dict[str, dict[str, Any]]:
  """Times each thunk ``repeats`` times, going round them in turn.

  Args:
    calls: name -> a thunk that runs one call to completion (blocking).
    repeats: timed calls of each.
    warmup: untimed calls of each first.
    cpu_time: also measure the CPU time of each call (see ``time_call``).

  Returns:
    name -> ``samples_s``, ``outputs`` (of the timed calls), ``loads``
    (load average after each call), ``seconds`` (median); with
    ``cpu_time``, also ``cpu_samples_s`` and ``cpu_seconds`` (median).
  """
  for _ in range(warmup):
    for call in calls.values():
      call()
  lists = ["samples_s", "outputs", "loads"] + (
      ["cpu_samples_s"] if cpu_time else [])
  res = {k: {x: [] for x in lists} for k in calls}
  for i in range(repeats):
    # Alternate the order too, so that none always follows the same one.
    names = list(calls) if i % 2 == 0 else list(calls)[::-1]
    for k in names:
      s, cpu, out, load = time_call(calls[k], cpu_time)
      res[k]["samples_s"].append(s)
      if cpu_time:
        res[k]["cpu_samples_s"].append(cpu)
      res[k]["outputs"].append(out)
      res[k]["loads"].append(load)
  for r in res.values():
    r["seconds"] = statistics.median(r["samples_s"])
    if cpu_time:
      r["cpu_seconds"] = statistics.median(r["cpu_samples_s"])
  return res


# --------------------------------------------------------------------------
# Results.


def metadata(config: ml_collections.ConfigDict, *,
             libraries: dict[str, Any] | None = None,
             devices: dict[str, Any] | None = None,
             env: tuple[str, ...] = ("JAX_PLATFORMS", "XLA_FLAGS")
             ) -> dict[str, Any]:
  """Versions, device and machine of this run.

  Args:
    config: the benchmark's config, recorded whole.
    libraries: more fields on libraries (versions, settings), placed after
      numpy's version.
    devices: more fields on devices, placed before ``num_devices``.
    env: the environment variables to record.

  Returns:
    A JSON-serialisable dict.
  """
  dev = jax.devices()[0]
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  return {
      "jax_version": jax.__version__,
      "jaxlib_version": jaxlib.__version__,
      "numpy_version": np.__version__,
      **(libraries or {}),
      "python_version": platform.python_version(),
      "device": str(dev), "platform": dev.platform,
      "device_kind": dev.device_kind, **(devices or {}),
      "num_devices": jax.device_count(),
      "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
      "machine": platform.machine(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "env": {k: os.environ.get(k) for k in env},
      "config": config.to_dict(),
  }


def get_row(rows: list[dict[str, Any]], measurement: str,
            impl: str) -> dict[str, Any]:
  """The row of ``(measurement, impl)``; KeyError if there is none."""
  for r in rows:
    if (r["measurement"], r["impl"]) == (measurement, impl):
      return r
  raise KeyError((measurement, impl))


# --------------------------------------------------------------------------
# Output.


def num(x, fmt: str) -> str:
  """``x`` formatted with ``fmt``, or a dash for None."""
  return "—" if x is None else format(x, fmt)


def verdict(value: float, target: float) -> str:
  """Whether ``value`` reaches ``target`` (higher is better), in a word."""
  return "meets" if value >= target else "MISSES"


def machine_summary(meta: dict[str, Any], libraries: str = "") -> str:
  """The summary's last line: the machine, the load and the run time.

  Args:
    meta: the results' ``metadata``.
    libraries: written after the jax version (e.g. ``", torch 2.5.1"``).

  Returns:
    The line, without a newline.
  """
  return (f"{meta['device']} ({meta['device_kind']}), "
          f"{meta['cpu_count']} CPUs, jax {meta['jax_version']}{libraries}; "
          f"load avg {meta['load_avg_1m_start']:.2f} -> "
          f"{meta['load_avg_1m_end']:.2f}; total "
          f"{meta['total_time_s']:.1f} s.")


def write_json(results: dict[str, Any], path: str) -> None:
  """Writes the results to ``path`` (directories are created)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)


def run_and_report(
    config: ml_collections.ConfigDict,
    run_benchmark: Callable[[ml_collections.ConfigDict], dict[str, Any]],
    format_table: Callable[[list[dict[str, Any]]], str],
    format_summary: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
  """Runs a benchmark, prints the table and summary, writes the JSON.

  Args:
    config: the benchmark's config; the JSON goes to ``config.output``.
    run_benchmark: config -> the results (``rows`` among them).
    format_table: the results' rows -> the table.
    format_summary: the results -> the summary.

  Returns:
    The results.
  """
  results = run_benchmark(config)
  print(format_table(results["rows"]))
  print()
  print(format_summary(results))
  write_json(results, config.output)
  print(f"Wrote {os.path.abspath(config.output)}")
  return results


def run_main(default_config_path: str,
             report: Callable[[ml_collections.ConfigDict], Any]) -> None:
  """Defines the ``--config`` flag and runs ``report`` on its config.

  For a script's ``if __name__ == "__main__":`` block only: the flag is
  defined here, not at import, so that tests can import the scripts without
  registering a global flag.

  Args:
    default_config_path: the config file ``--config`` defaults to.
    report: runs the benchmark and reports it (the script's
      ``run_and_report``).
  """
  # pylint: disable=g-import-not-at-top
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_file(
      "config", default_config_path,
      f"Benchmark config: {os.path.relpath(default_config_path, REPO_ROOT)}"
      "[:quick], overrides with --config.FIELD=VALUE.")
  # Defined in this module, the flag would be missing from the script's
  # --help, which lists the main module's key flags.
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments: {argv[1:]}")
    report(config.value)

  app.run(main)
