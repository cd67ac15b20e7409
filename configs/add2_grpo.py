"""The main job: a small decoder learns 2-digit addition, SFT then GRPO.

Launch from the repository root::

  python -m jaxrl_group.main --config=configs/add2_grpo.py --workdir=runs/add2
  python -m jaxrl_group.main --config=configs/add2_grpo.py \\
      --config.advantage.name=rloo --workdir=runs/add2_rloo
  python -m jaxrl_group.main --config=configs/add2_grpo.py:smoke \\
      --workdir=/tmp/smoke

The supervised warm start stops early on purpose (``sft.steps``), so that RL
starts from a policy that is right some of the time and has room to improve.

Args (``--config=configs/add2_grpo.py:<arg>``): ``""`` the default run;
``"smoke"`` a few steps of everything on a tiny model (tests, CI);
``"sft_only"`` the same budget spent on continued supervised training
instead of RL (the comparison the README reports).
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config.

  Launch: ``python -m jaxrl_group.main --config=configs/add2_grpo.py
  --workdir=runs/add2`` (add ``:smoke`` or ``:sft_only`` to the file name
  for the variants in the module docstring).
  """
  arg = arg or ""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # The policy: a name from jaxrl_group.models.CONFIGS and field overrides.
  c.model = config_dict.create(
      name="tiny",
      d_model=128, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32,
      mlp_dim=512, max_seq_len=64,
      param_dtype="float32", dtype="float32",
      remat="matmuls")  # "none" | "matmuls" | "full": see models.ModelConfig

  # The task: a name from jaxrl_group.tasks.TASKS (generated on device).
  c.task = config_dict.create(name="add2", prompt_len=8)

  # Rollouts: G samples per prompt, traced sampling knobs.
  c.sampler = config_dict.create(
      group_size=8,        # G
      max_new_tokens=6,    # T; an add2 answer is at most 3 digits + EOS
      temperature=1.0,
      top_p=1.0,
      top_k=0)

  # Reward: correct_weight * exact match + format_weight * well formed.
  c.reward = config_dict.create(correct_weight=1.0, format_weight=0.0)

  # Advantage estimator: a registry name or a comma-separated chain, with
  # options as "key=value,..." ("name.key=value" inside a chain), and an
  # optional convention preset ("verl", "verl_vectorized", "trl").
  c.advantage = config_dict.create(name="grpo", kwargs="", preset="")

  # Context stand-ins for estimators that need them (train/context.py).
  c.context = config_dict.create(num_subgroups=2, prompt_id_buckets=4096)

  # Objective (jaxrl_group.losses.make_objective) and PPO epochs.
  c.loss = config_dict.create(
      surrogate="ppo_clip",
      clip_eps=0.2,          # eps_low = eps_high for ppo_clip
      surrogate_kwargs="",   # extra options, "key=value,..."
      aggregation="seq_mean_token_mean",
      kl_coef=0.0,           # > 0 adds k3 KL to the SFT policy
      kl_estimator="k3",
      entropy_coef=0.0,
      num_iterations=2,      # PPO epochs per rollout batch
      num_minibatches=1)     # optimizer steps per epoch

  # Optimizers of the two phases (the RL one: lr, warmup_steps in RL
  # steps, a cosine decay to 0 over rl.steps; sft.* sets SFT's lr, warm-up
  # and length, with the same name and schedule).
  c.optim = config_dict.create(
      name="adamw", lr=2e-4, b1=0.9, b2=0.99, weight_decay=0.0,
      warmup_steps=0, schedule="cosine", max_grad_norm=1.0)

  # Phase 1: supervised warm start on gold answers.
  # It stops at the first evaluation reaching target_accuracy (0 = never),
  # or after `steps`.
  c.sft = config_dict.create(
      steps=3000, batch_size=64, lr=1e-3, warmup_steps=10,
      eval_every=10, target_accuracy=0.4)

  # Phase 2: RL.
  c.rl = config_dict.create(
      steps=1200, prompts_per_step=32, eval_every=50, steps_per_call=10)

  # Held-out greedy evaluation, fixed by its seed.
  c.eval = config_dict.create(size=480, seed=1234)

  # Devices: the first num_devices (0 = all), axis sizes (-1 = the rest);
  # "dp" replicates parameters, "fsdp" shards them over the fsdp axis.
  c.mesh = config_dict.create(num_devices=0, data=-1, fsdp=1, tensor=1,
                              rules="dp")

  # Orbax checkpoints under <workdir>/checkpoints; resume from the latest.
  c.checkpoint = config_dict.create(every=100, max_to_keep=2, resume=True)

  # Output: JSONL + TensorBoard under <workdir>, a progress bar, a plot.
  c.log = config_dict.create(tensorboard=True, progress=True, plot=True)

  if arg == "smoke":
    c.model.update(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                   head_dim=16, mlp_dim=64)
    c.sft.update(steps=4, batch_size=16, eval_every=2, target_accuracy=0.0)
    c.rl.update(steps=3, prompts_per_step=8, eval_every=2, steps_per_call=1)
    c.sampler.update(group_size=4)
    c.eval.size = 32
    c.checkpoint.every = 1
    c.log.update(tensorboard=False, progress=False, plot=False)
  elif arg == "sft_only":
    # Spend the RL phase's time on more supervised steps instead.
    c.sft.target_accuracy = 0.0
    c.rl.steps = 0
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; use '', 'smoke' or "
                     "'sft_only'.")
  c.lock()
  return c
