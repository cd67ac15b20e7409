"""Loading and running the benchmark scripts, for the experiments tests."""

import importlib.util
import json
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def load(name, relpath):
  """Imports the file at ``relpath`` (from the repository root) as ``name``.

  The scripts and configs are files, not modules of a package, so they are
  loaded by path.

  Args:
    name: the module's name.
    relpath: the file's path relative to the repository root.

  Returns:
    The module.
  """
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(_ROOT, relpath))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_and_read(bench, config, tmp_dir):
  """Runs a script's ``run_and_report`` quietly, its JSON in ``tmp_dir``.

  Args:
    bench: the benchmark script (from ``load``).
    config: its config; ``output`` and ``progress`` are set here.
    tmp_dir: a ``pathlib.Path`` for the JSON.

  Returns:
    ``(config, results, the JSON as read back)``.
  """
  config.output = str(tmp_dir / "bench.json")
  config.progress = False
  results = bench.run_and_report(config)
  with open(config.output, encoding="utf-8") as f:
    return config, results, json.load(f)
