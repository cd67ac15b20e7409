"""Configuration of the RL train-step benchmark (experiments/bench_step.py).

Times one GRPO step of the add2 experiment on the CPU benchmark model: the
sampling half, the learning half, the bare sampler and the whole jitted step,
with compile times and the achieved GFLOP/s against a plain fp32 matmul.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the benchmark configuration.

  Launch from the repository root::

    python experiments/bench_step.py
    python experiments/bench_step.py --config=configs/bench_step.py:quick
    python experiments/bench_step.py --config.repeats=11 \\
        --config.output=/tmp/bench_step.json

  Args:
    arg: ``None`` (or ``""``/``"full"``) for the benchmark's shapes;
      ``"quick"`` for a run of a few seconds on a small model (used by the
      tests).

  Returns:
    A ``ConfigDict`` with the fields below.
  """
  c = ml_collections.ConfigDict()
  # The experiment config whose fields the step is built from (relative to
  # the repository root); the fields below override it.
  c.experiment = "configs/add2_grpo.py"
  # The policy: a name of jaxrl_group.models.CONFIGS, random init, with all
  # of the experiment config's model fields set to that model's values.
  c.model = "bench-tiny"
  c.param_dtype = "float32"
  c.dtype = "float32"
  c.seed = 0

  # The work of one step: B prompts ("a+b=" problems of the add2 task,
  # left-padded to prompt_len) x G samples x up to T new tokens.
  c.task = "add2"
  c.prompt_len = 16
  c.num_prompts = 16       # rl.prompts_per_step, B
  c.group_size = 8         # G
  c.max_new_tokens = 32    # T
  c.temperature = 1.0
  c.top_p = 1.0

  # The update: GRPO advantages, PPO clip, no KL, one AdamW step per
  # rollout batch.
  c.advantage = "grpo"
  c.clip_eps = 0.2
  c.aggregation = "seq_mean_token_mean"
  c.num_iterations = 1
  c.lr = 1e-5
  # Gradient clipping as in the experiment config (and TRL's default); one
  # global norm over the gradients, a negligible cost.
  c.max_grad_norm = 1.0

  # Timing: every compiled function runs once untimed after compiling, then
  # `repeats` timed calls of each, interleaved, so that changes of the
  # machine's load hit all of them; the median is reported.
  c.repeats = 7
  # XLA options for compiling the timed functions (``.compile(
  # compiler_options=...)``); empty: XLA's defaults, as ``jax.jit`` uses.
  c.compiler_options = {}

  # The plain jitted fp32 matmuls timed in the same rounds, the reference
  # of the achieved GFLOP/s: a square n x n x n one and the learner's
  # largest GEMM, [B * G * T, D] x [D, F]. One timed sample runs as many
  # back to back as last matmul_sample_s.
  c.matmul_size = 1024
  c.matmul_sample_s = 0.2

  c.target_step_s = 0.75  # seconds per step on the 2-core CPU

  c.output = "bench_step.json"  # JSON path (relative to the cwd)
  c.progress = True  # print each measurement to stderr as it finishes

  if arg in (None, "", "full"):
    return c
  if arg == "quick":
    c.model = "tiny"
    c.prompt_len = 8
    c.num_prompts = 2
    c.group_size = 2
    c.max_new_tokens = 4   # the longest add2 answer: 3 digits and EOS
    c.repeats = 2
    c.matmul_size = 128
    c.matmul_sample_s = 0.01
    # Compiling dominates a run this small; these cut it about 6 times.
    c.compiler_options = {"xla_backend_optimization_level": 0,
                          "xla_cpu_use_fusion_emitters": False}
    return c
  raise ValueError(f"unknown config argument {arg!r}; use 'quick' or none.")
