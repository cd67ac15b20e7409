"""A tiny experiment config shared by the train tests."""

import importlib.util
import pathlib

CONFIG = (pathlib.Path(__file__).parent.parent.parent / "configs"
          / "add2_grpo.py")


def load_config_module():
  spec = importlib.util.spec_from_file_location("add2_grpo", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_config(**overrides):
  """The smoke config, shrunk further, with dotted-name overrides."""
  c = load_config_module().get_config("smoke")
  with c.unlocked():
    c.model.update(d_model=16, num_heads=2, num_kv_heads=1, head_dim=8,
                   mlp_dim=32)
    c.sampler.group_size = 4
    c.rl.prompts_per_step = 8
    for k, v in overrides.items():
      node = c
      *path, leaf = k.split(".")
      for p in path:
        node = node[p]
      node[leaf] = v
  return c
