"""Trains a policy from a config file, into a work directory.

Example::

  python -m jaxrl_group.main --config=configs/add2_grpo.py --workdir=runs/add2
  python -m jaxrl_group.main --config=configs/add2_grpo.py \\
      --config.advantage.name=rloo --workdir=runs/add2_rloo

Starting again with the same ``--workdir`` resumes from its newest
checkpoint. On several hosts, call ``jax.distributed.initialize()`` first
(``--multihost``); every process runs this same command.
"""

import json

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxrl_group.train import build as build_lib
from jaxrl_group.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and plots.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() before anything "
    "else (one process per host, on TPU pods and GPU clusters).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  # Orbax logs every checkpoint step at INFO; keep the console for progress.
  logging.set_verbosity(logging.WARNING)
  if _MULTIHOST.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  try:
    summary = loop.run(_CONFIG.value, _WORKDIR.value)
  except build_lib.ConfigError as e:
    raise app.UsageError(str(e)) from e
  print(json.dumps(summary, indent=1))
  print(f"held-out greedy accuracy: after SFT {summary['sft_accuracy']:.1%}, "
        f"after RL {summary['final_accuracy']:.1%} "
        f"({summary['accuracy_gain'] * 100:+.1f} points)")


if __name__ == "__main__":
  app.run(main)
