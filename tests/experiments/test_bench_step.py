"""Tests of the train-step benchmark script: it runs, checks and reports.

Timings are never asserted (machines are shared and noisy); the tests check
that every measurement produced a row with consistent counts, that the
consistency checks ran, that the step is built with the benchmark model's
own shape, and the FLOP counts on a small case worked out by hand.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_group import models
from jaxrl_group.train import build as build_lib
from tests.experiments import common

bench = common.load("bench_step", "experiments/bench_step.py")
bench_config = common.load("bench_step_config", "configs/bench_step.py")
# What the benchmark scripts share, as the script imported it.
bench_common = bench._common  # pylint: disable=protected-access
STEP_ROWS = ("rollout", "collect", "learn", "step")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
  return common.run_and_read(bench, bench_config.get_config("quick"),
                             tmp_path_factory.mktemp("bench"))


def test_json_has_a_row_per_measurement(quick_results):
  config, _, data = quick_results
  rows = data["rows"]
  assert [(r["measurement"], r["impl"]) for r in rows] == list(bench.LABELS)
  b, g = config.num_prompts, config.group_size
  p, t = config.prompt_len, config.max_new_tokens
  cfg = models.get_model_config(config.model)
  for r in rows:
    assert r["seconds"] > 0 and r["load_avg_1m"] >= 0
    assert len(r["samples_s"]) == len(r["loads"])
    assert r["seconds"] == np.median(r["samples_s"])
    assert r["min_s"] == min(r["samples_s"])
    assert r["gflop_per_s"] == pytest.approx(r["gflop"] / r["seconds"])
    assert r["fraction_of_matmul"] > 0
  assert bench_common.get_row(rows, "matmul", "square")[
      "fraction_of_matmul"] == pytest.approx(1.0)
  # Every measurement, the matmuls included, was timed in the same rounds.
  assert all(len(r["samples_s"]) == config.repeats for r in rows)
  for impl in ("square", "learner_gemm"):
    assert bench_common.get_row(rows, "matmul", impl)["calls_per_sample"] >= 1
  for name in STEP_ROWS:
    r = bench_common.get_row(rows, name,
                             "sampler" if name == "rollout" else "step")
    assert (r["B"], r["G"], r["P"], r["T"]) == (b, g, p, t)
    for k in ("lower_s", "compile_s", "first_call_s", "warmup_s"):
      assert r[k] >= 0, (name, k)
    assert r["compile_s"] > 0
    want_slots = b * g * (p + t) if name == "learn" else b * g * t
    assert r["slots"] == want_slots
    assert 0 < r["valid_tokens"] <= r["slots"]
    assert r["slots_per_s"] == pytest.approx(r["slots"] / r["seconds"])
    assert r["valid_tokens_per_s"] <= r["slots_per_s"]
    assert r["nominal_gflop_per_s"] == pytest.approx(
        r["nominal_gflop"] / r["seconds"])
  # FLOPs: the learner's from the shapes; with T this short every sample
  # runs to T, so the samplers' too.
  learn = bench_common.get_row(rows, "learn", "step")
  assert learn["gflop"] == pytest.approx(
      bench.learner_flops(cfg, b, g, p, t) / 1e9)
  sample_gflop = bench_common.rollout_flops(cfg, b, g, p, t) / 1e9
  assert bench_common.get_row(rows, "collect", "step")[
      "gflop"] == pytest.approx(sample_gflop)
  step = bench_common.get_row(rows, "step", "step")
  assert step["gflop"] == pytest.approx(sample_gflop + learn["gflop"])
  n = cfg.num_params()
  assert step["nominal_gflop"] == pytest.approx(
      (2 * n * b * g * t + 6 * n * b * g * (p + t)) / 1e9)


def test_checks_headline_and_output(quick_results):
  config, results, data = quick_results
  names = [c["check"] for c in data["checks"]]
  assert all(c["passed"] for c in data["checks"])
  assert len(names) == 4
  assert any("bare sampler tokens == collect tokens" in n for n in names)
  assert any("step params == learn(collect) params" in n for n in names)
  h = data["headline"]
  step = bench_common.get_row(data["rows"], "step", "step")
  assert h["step_s"] == step["seconds"]
  assert h["meets_target"] == (h["step_s"] <= config.target_step_s)
  assert h["collect_share"] + h["learn_share"] == pytest.approx(1.0)
  assert h["dominant_half"] in ("collect", "learn")
  for key in ("sampler_valid_tokens_per_s", "learner_tokens_per_s",
              "step_gflop_per_s", "fraction_of_square_matmul",
              "step_compile_s", "matmul_gflop_per_s"):
    assert h[key] > 0, key
  m = data["metrics"]["step_metrics_first"]
  assert m["sampled_tokens"] == data["metrics"]["collect_metrics"][
      "sampled_tokens"]
  assert all(np.isfinite(v) for v in m.values())
  meta = data["metadata"]
  for key in ("jax_version", "device", "cpu_count", "date", "total_time_s",
              "load_avg_1m_start", "load_avg_1m_end"):
    assert meta[key] is not None
  assert meta["model"]["name"] == config.model
  assert meta["experiment_config"]["rl"]["prompts_per_step"] == (
      config.num_prompts)
  table = bench.format_table(results["rows"])
  assert table.startswith("| measurement | what | shape |")
  assert len(table.splitlines()) == len(results["rows"]) + 2
  summary = bench.format_summary(results)
  assert "Headline" in summary and "whole step" in summary


def test_experiment_config_has_the_bench_model_and_work():
  config = bench_config.get_config()
  c = bench.experiment_config(config)
  exp = build_lib.build(c)
  # The experiment config's own widths must not leak into the model.
  assert exp.model_cfg == models.get_model_config("bench-tiny")
  assert exp.task.name == "add2" and exp.task.prompt_len == 16
  s = exp.sampler
  assert (s.group_size, s.max_new_tokens, s.temperature, s.top_p,
          s.top_k) == (8, 32, 1.0, 1.0, 0)
  assert c.rl.prompts_per_step == 16
  assert c.optim.lr == 1e-5 and c.optim.name == "adamw"
  assert c.loss.num_iterations == 1 and c.loss.num_minibatches == 1
  assert c.loss.surrogate == "ppo_clip" and c.loss.clip_eps == 0.2
  assert c.loss.aggregation == "seq_mean_token_mean"
  assert not exp.kl_on and not exp.needs_ref_params
  assert c.advantage.name == "grpo"
  # The nominal work of the spec: ~180 GFLOP per step.
  f = bench.nominal_flops(exp.model_cfg, 16, 8, 16, 32)
  assert 170e9 < f["sampler"] + f["learner"] < 190e9


def test_flops_by_hand():
  cfg = models.ModelConfig(vocab_size=8, d_model=4, num_layers=1,
                           num_heads=2, num_kv_heads=1, head_dim=2,
                           mlp_dim=6)
  # Per token: qkv 4 * (4 + 2 * 2) = 32, out 4 * 4 = 16, mlp 3 * 4 * 6 = 72
  # multiply-adds; attention 2 * 4 per key; unembed 4 * 8 = 32.
  def per_token(ctx, unembed=True):
    return 2 * (32 + 16 + 72 + 2 * 4 * ctx + (32 if unembed else 0))
  prefill = 3 * (per_token(1, False) + per_token(2, True))
  assert bench_common.prefill_flops(cfg, 3, 2) == prefill
  # Longest sample 3 tokens: decode steps at contexts P + 1 and P + 2.
  assert bench_common.rollout_flops(cfg, 3, 5, 2, 3) == (
      prefill + 15 * (per_token(3) + per_token(4)))
  # Learner: prefill and T = 2 slots at contexts 3 and 4, three times.
  assert bench.learner_flops(cfg, 3, 5, 2, 2) == 3 * (
      prefill + 15 * (per_token(3) + per_token(4)))
  # Embedding, output projection, final norm, and the layer: two norms,
  # q, k, v, out and the three MLP matrices.
  n = cfg.num_params()
  assert n == 8 * 4 + 4 * 8 + 4 + (2 * 4 + 4 * 8 + 4 * 4 + 3 * 4 * 6)
  assert bench.nominal_flops(cfg, 3, 5, 2, 2) == {
      "sampler": 2 * n * 3 * 5 * 2, "learner": 6 * n * 3 * 5 * 4}


def test_round_fraction_pairs_samples_of_the_same_round():
  # Round 0: 4 GFLOP in 2 s against 1 GFLOP in 0.1 s = 2 / 10; round 1:
  # 4 in 1 s against 1 in 0.5 s = 4 / 2; round 2: 4 in 4 s vs 1 in 1 s.
  row = {"gflop": 4.0, "nominal_gflop": 8.0, "samples_s": [2.0, 1.0, 4.0]}
  ref = {"gflop": 1.0, "samples_s": [0.1, 0.5, 1.0]}
  assert bench.round_fraction(row, ref) == pytest.approx(1.0)  # 0.2, 2, 1
  assert bench.round_fraction(row, ref, "nominal_gflop") == pytest.approx(2)


def test_consistency_checks_catch_different_work():
  params = {"w": jnp.zeros(3)}
  tokens = np.arange(12).reshape(1, 3, 4)
  metrics = {"sampled_tokens": 12.0, "reward": 0.5}
  ok = bench.consistency_checks(params, {"w": jnp.full(3, 1e-5)},
                                {"w": jnp.full(3, 1e-5)}, tokens, tokens,
                                metrics, metrics)
  assert [c["passed"] for c in ok] == [True] * 4
  assert ok[-1]["max_abs_update"] == pytest.approx(1e-5)
  with pytest.raises(AssertionError, match="tokens"):
    bench.consistency_checks(params, params, params, tokens, tokens + 1,
                             metrics, metrics)
  with pytest.raises(AssertionError, match="params"):
    bench.consistency_checks(params, {"w": jnp.full(3, 1e-5)},
                             {"w": jnp.full(3, -1e-5)}, tokens, tokens,
                             metrics, metrics)
