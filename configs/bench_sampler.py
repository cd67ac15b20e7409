"""Configuration of the sampler benchmark (experiments/bench_sampler.py).

Times jaxrl_group's jitted group sampler on the CPU benchmark model against
Hugging Face ``transformers`` ``generate`` in torch on the same shapes and
weights, and the shared (once per group) prompt prefill against the usual
prompt repeated G times.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the benchmark configuration.

  Launch from the repository root::

    python experiments/bench_sampler.py
    python experiments/bench_sampler.py --config=configs/bench_sampler.py:quick
    python experiments/bench_sampler.py --config.torch=False \\
        --config.output=/tmp/bench_sampler.json

  Args:
    arg: ``None`` (or ``""``/``"full"``) for the benchmark's shapes;
      ``"quick"`` for a run of a few seconds on the tiny model (used by the
      tests).

  Returns:
    A ``ConfigDict`` with the fields below.
  """
  c = ml_collections.ConfigDict()
  c.model = "bench-tiny"  # a name of jaxrl_group.models.CONFIGS, fp32
  c.seed = 0

  # Rollouts: B prompts x G samples x T new tokens. Prompts are "a+b="
  # problems of the character tokenizer, left-padded to prompt_len.
  c.num_prompts = 16
  c.group_size = 8
  c.max_new_tokens = 32
  c.prompt_len = 16
  c.max_operand = 9999  # operands a, b drawn from [0, max_operand]
  c.temperature = 1.0
  c.top_p = 1.0
  c.top_k = 0  # 0 disables top-k (torch generate is told the same)

  # Timing: warm-up calls (the first compiles), then `repeats` timed calls
  # of ours and of torch, interleaved; the median is reported.
  c.warmup = 1
  c.repeats = 7

  # Hugging Face transformers generate (torch) on the same shapes and
  # weights; skipped with a message when torch is not installed.
  c.torch = True
  c.torch_threads = 2
  c.parity_atol = 1e-4  # ours vs torch logits on the same weights

  # Shared prefill vs the prompt repeated G times, on long prompts.
  c.long_prompt_len = 256
  c.long_num_prompts = 16
  c.long_group_size = 8
  c.long_new_tokens = 4  # the whole-sampler comparison generates this many
  c.long_repeats = 3  # the repeated layout takes seconds per call

  # Plain jitted fp32 matmuls measured in the same run, as the reference
  # for the achieved GFLOP/s: a square one and a chain of the decode step's
  # MLP GEMMs ([B * G, D] x [D, F] and back).
  c.matmul_size = 1024
  c.matmul_chain = 16  # GEMM pairs per timed call of the chain

  c.target_vs_torch = 3.0
  c.target_shared_prefill = 3.0

  c.output = "bench_sampler.json"  # JSON path (relative to the cwd)
  c.progress = True  # print each measurement to stderr as it finishes

  if arg in (None, "", "full"):
    return c
  if arg == "quick":
    c.model = "tiny"
    c.num_prompts = 2
    c.group_size = 2
    c.max_new_tokens = 4
    c.prompt_len = 12
    c.repeats = 2
    # The shapes of the rollouts above, so that the shared-prefill sampler
    # reuses their compiled program.
    c.long_prompt_len = c.prompt_len
    c.long_num_prompts = c.num_prompts
    c.long_group_size = c.group_size
    c.long_new_tokens = c.max_new_tokens
    c.long_repeats = 2
    c.matmul_size = 128
    c.matmul_chain = 2
    return c
  raise ValueError(f"unknown config argument {arg!r}; use 'quick' or none.")
