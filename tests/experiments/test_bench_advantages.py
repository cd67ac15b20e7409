"""Tests of the "adv" micro-benchmark script: it runs, checks and reports.

Timings are never asserted (machines are shared and noisy); the tests check
that every implementation produced a row, that the correctness checks ran
and that skipped measurements say why.
"""

import numpy as np
import pytest

from tests.experiments import common

bench = common.load("bench_advantages", "experiments/bench_advantages.py")
bench_config = common.load("bench_adv_config", "configs/bench_adv.py")


def _quick(tmp_path, **overrides):
  config = bench_config.get_config("quick")
  config.output = str(tmp_path / "bench.json")
  config.progress = False
  config.min_time_s = 0.002
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
  tmp_dir = tmp_path_factory.mktemp("bench")
  return common.run_and_read(bench, _quick(tmp_dir), tmp_dir)


def test_json_has_a_timed_row_per_impl_estimator_and_cell(quick_results):
  config, _, data = quick_results
  rows = data["rows"]
  assert {r["impl"] for r in rows} == set(bench.IMPLS)
  by_key = {(r["impl"], r["estimator"], r["N"], r["G"], r["T"]): r
            for r in rows}
  for t in config.token_lengths:
    for n in config.rows:
      for g in config.group_sizes:
        for impl, name in bench.planned_impls(config, n, g, t):
          r = by_key[(impl, name, n, g, t)]
          assert r["status"] == "ok", r
          assert r["us_per_call"] > 0 and r["rows_per_s"] > 0
          assert r["load_avg_1m"] >= 0
          if impl != "loop":
            assert r["speedup_vs_loop"] > 0 and r["speedup_vs_numpy"] > 0
  # Every configured estimator was timed under jit; token-level only at T>1.
  jax_names = {r["estimator"] for r in rows if r["impl"] == "jax"}
  assert set(bench._split(config.estimators)) <= jax_names
  token_t = {r["T"] for r in rows if r["estimator"] == "reinforce_pp_baseline"}
  assert token_t == {t for t in config.token_lengths if t > 1}
  assert len(rows) == len(by_key)


def test_correctness_checks_ran_for_every_cell(quick_results):
  config, _, data = quick_results
  checks = data["checks"]
  assert checks and all(c["passed"] for c in checks)
  assert all(c["max_abs_err"] <= 1e-5 for c in checks)
  for t in config.token_lengths:
    for n in config.rows:
      for g in config.group_sizes:
        what = {c["check"] for c in checks
                if (c["N"], c["G"], c["T"]) == (n, g, t)}
        assert "jax grpo == numpy grpo" in what
        assert "loop grpo == numpy grpo" in what
        assert "jax grpo == loop grpo" in what
        assert "jax dr_grpo == numpy dr_grpo" in what
        assert "jax group_by grpo == loop grpo (shuffled ids)" in what


def test_metadata_and_headline(quick_results):
  config, results, data = quick_results
  meta = data["metadata"]
  for key in ("jax_version", "device", "cpu_count", "date", "total_time_s"):
    assert meta[key] is not None
  h = data["headline"]
  assert (h["N"], h["G"], h["T"]) == (config.headline_rows,
                                      config.headline_group_size,
                                      config.headline_token_length)
  assert h["speedup_vs_loop"] > 0 and h["speedup_vs_numpy"] > 0
  assert "Headline" in bench.format_summary(results)
  table = bench.format_table(results["rows"])
  assert table.startswith("| impl | estimator | N | G | T | µs/call |")
  assert len(table.splitlines()) == len(results["rows"]) + 2


def test_skipped_measurements_say_why(tmp_path):
  config = _quick(tmp_path, rows=(256,), token_lengths=(1, 8),
                  estimators="grpo", loop_max_rows=128, max_mem_gib=1e-5)
  results = bench.run_benchmark(config)
  rows = results["rows"]
  loop = [r for r in rows if r["impl"] == "loop" and r["T"] == 1]
  assert loop and all(r["status"] == "skipped" for r in loop)
  assert all("loop_max_rows" in r["skip_reason"] for r in loop)
  # 20 B * 256 * 8 > 1e-5 GiB >= 20 B * 256 * 1: only the T = 8 cell skips.
  big = [r for r in rows if r["T"] == 8]
  assert big and all(r["status"] == "skipped" and "GiB" in r["skip_reason"]
                     for r in big)
  assert "SKIPPED" in bench.format_table(rows)
  # Without the loop, the jitted grpo still matched numpy.
  assert any(c["check"] == "jax grpo == numpy grpo" for c in results["checks"])


def test_baselines_agree_on_a_tiny_example():
  scores_N = np.array([1, 0, 0, 1, 1, 1, 0, 0], np.float32)
  ids_N = np.array([0, 0, 1, 1, 0, 1, 0, 1], np.int32)
  loop = bench.loop_advantages(scores_N, ids_N)
  order = np.argsort(ids_N, kind="stable")
  ref = np.empty_like(scores_N)
  ref[order] = bench.numpy_advantages(scores_N[order], 4)
  np.testing.assert_allclose(loop, ref, rtol=1e-6, atol=1e-6)
  # Group 0: rewards (1, 0, 1, 0), mean 0.5, unbiased std 1/sqrt(3).
  np.testing.assert_allclose(loop[0], 0.5 / (np.sqrt(1 / 3) + 1e-6),
                             rtol=1e-6)


def test_assert_close_raises_on_different_math():
  a = np.zeros((3, 4), np.float32)
  b = a.copy()
  b[2, 1] = 1e-3
  with pytest.raises(AssertionError):
    bench.assert_close(a, b, rtol=1e-5, atol=1e-5, what="x")
  assert bench.assert_close(a, a, rtol=1e-5, atol=1e-5, what="x") == 0.0
