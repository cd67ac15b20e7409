"""Tests of the sampler benchmark script: it runs, checks and reports.

Timings are never asserted (machines are shared and noisy); the tests check
that every measurement produced a row with consistent counts, that the
correctness checks ran, and the pieces (prompts, FLOP counts, valid-token
counts) on small cases worked out by hand.
"""

import copy

import numpy as np
import pytest

from jaxrl_group import models
from jaxrl_group import tasks
from tests.experiments import common

bench = common.load("bench_sampler", "experiments/bench_sampler.py")
bench_config = common.load("bench_sampler_config", "configs/bench_sampler.py")
# What the benchmark scripts share, as the script imported it.
bench_common = bench._common  # pylint: disable=protected-access
HAS_TORCH = bench.import_torch()[0] is not None


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
  return common.run_and_read(bench, bench_config.get_config("quick"),
                             tmp_path_factory.mktemp("bench"))


def test_json_has_a_row_per_measurement(quick_results):
  config, _, data = quick_results
  rows = data["rows"]
  assert [(r["measurement"], r["impl"]) for r in rows] == list(bench.LABELS)
  for r in rows:
    assert r["load_avg_1m"] >= 0
    if r["status"] != "ok":
      assert r["impl"] == "torch" and not HAS_TORCH and r["skip_reason"]
      continue
    assert r["seconds"] > 0 and len(r["samples_s"]) == len(r["loads"])
    assert r["cpu_seconds"] > 0
    assert len(r["cpu_samples_s"]) == len(r["samples_s"])
    assert r["seconds"] == np.median(r["samples_s"])
  b, g, t = config.num_prompts, config.group_size, config.max_new_tokens
  ours = bench_common.get_row(rows, "rollout", "jax")
  assert (ours["B"], ours["G"], ours["P"], ours["T"]) == (
      b, g, config.prompt_len, t)
  assert len(ours["samples_s"]) == config.repeats
  assert ours["slots"] == b * g * t
  assert 0 < ours["valid_tokens"] <= ours["slots"]
  assert ours["slots_per_s"] == pytest.approx(ours["slots"] / ours["seconds"])
  assert ours["valid_tokens_per_s"] <= ours["slots_per_s"]
  assert ours["compile_s"] >= 0 and ours["first_call_s"] > ours["compile_s"]
  assert ours["gflop_per_s"] > 0
  theirs = bench_common.get_row(rows, "rollout", "torch")
  assert (theirs["status"] == "ok") == HAS_TORCH
  if HAS_TORCH:
    assert 0 < theirs["valid_tokens"] <= theirs["slots"] == b * g * t
  for m in ("prefill", "sampler_long"):
    for impl in ("shared", "repeated"):
      r = bench_common.get_row(rows, m, impl)
      assert (r["B"], r["G"], r["P"]) == (
          config.long_num_prompts, config.long_group_size,
          config.long_prompt_len)


def test_checks_and_headline(quick_results):
  config, results, data = quick_results
  names = [c["check"] for c in data["checks"]]
  assert all(c["passed"] for c in data["checks"])
  assert any("share_prefill" in n for n in names)
  if HAS_TORCH:
    parity = [c for c in data["checks"] if "torch logits" in c["check"]]
    assert parity and parity[0]["max_abs_err"] <= config.parity_atol
  h = data["headline"]
  for key in ("valid_tokens_per_s", "slots_per_s", "gflop_per_s",
              "fraction_of_square_matmul", "fraction_of_decode_gemm",
              "shared_prefill_speedup", "shared_sampler_speedup"):
    assert h[key] > 0, key
  assert (h["vs_torch_slots"] is not None) == HAS_TORCH
  if HAS_TORCH:
    assert h["vs_torch_slots"] > 0 and h["vs_torch_valid_tokens"] > 0
    assert h["vs_torch_cpu_time"] > 0
  meta = data["metadata"]
  for key in ("jax_version", "device", "cpu_count", "date", "total_time_s",
              "load_avg_1m_start", "load_avg_1m_end"):
    assert meta[key] is not None
  assert meta["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
  assert meta["model"]["name"] == config.model
  table = bench.format_table(results["rows"])
  assert table.startswith("| measurement | implementation | shape |")
  assert len(table.splitlines()) == len(results["rows"]) + 2
  summary = bench.format_summary(results)
  assert "Headline" in summary and "shared prefill" in summary


def test_summary_without_torch(quick_results):
  _, results, _ = quick_results
  results = copy.deepcopy(results)
  row = bench_common.get_row(results["rows"], "rollout", "torch")
  row.update(status="skipped", skip_reason="torch is not installed")
  for k in ("seconds", "cpu_seconds", "valid_tokens_per_s", "slots_per_s",
            "gflop_per_s"):
    row[k] = None
  results["headline"] = bench.headline(results["rows"],
                                       bench_config.get_config("quick"))
  assert results["headline"]["vs_torch_slots"] is None
  assert "not measured (torch is not installed)" in bench.format_summary(
      results)
  assert "SKIPPED: torch is not installed" in bench.format_table(
      results["rows"])


def test_prompts_are_left_padded_sums():
  texts, prompts_BxP, lengths_B = bench.make_prompts(5, 12, 99, seed=0)
  tok = tasks.CharTokenizer()
  assert tok.decode_batch(prompts_BxP) == texts
  for text, row, n in zip(texts, prompts_BxP, lengths_B):
    a, b = text[:-1].split("+")
    assert text.endswith("=") and 0 <= int(a) <= 99 and 0 <= int(b) <= 99
    assert n == len(text) and np.all(row[:12 - n] == tasks.PAD_ID)
  long_BxP, long_B = bench.make_long_prompts(3, 64, seed=0)
  assert long_BxP.shape == (3, 64) and np.all(long_B <= 64)
  for text in tok.decode_batch(long_BxP):
    *solved, last = text.split("\n")
    assert len(solved) >= 3 and last.endswith("=")
    for line in solved:
      lhs, c = line.split("=")
      a, b = lhs.split("+")
      assert int(a) + int(b) == int(c)


def test_count_valid_by_hand():
  eos = tasks.EOS_ID
  tokens = np.array([[5, eos, 0, 0], [5, 6, 7, 8], [eos, 0, 0, 0]])
  assert bench.count_valid(tokens, eos) == (2 + 4 + 1, 4)


def test_flops_by_hand():
  cfg = models.ModelConfig(vocab_size=8, d_model=4, num_layers=1,
                           num_heads=2, num_kv_heads=1, head_dim=2,
                           mlp_dim=6)
  # Per token: qkv 4 * (4 + 2 * 2) = 32, out 4 * 4 = 16, mlp 3 * 4 * 6 = 72
  # multiply-adds; attention 2 * 4 per key; unembed 4 * 8 = 32.
  def per_token(ctx, unembed=True):
    return 2 * (32 + 16 + 72 + 2 * 4 * ctx + (32 if unembed else 0))
  assert bench_common.prefill_flops(cfg, 3, 2) == 3 * (
      per_token(1, False) + per_token(2, True))
  # Longest sample 3 tokens: decode steps at contexts P + 1 and P + 2.
  assert bench_common.rollout_flops(cfg, 3, 5, 2, 3) == (
      bench_common.prefill_flops(cfg, 3, 2)
      + 15 * (per_token(3) + per_token(4)))
