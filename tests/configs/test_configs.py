"""Every config file loads, with and without its arguments."""

import importlib.util
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

CONFIGS = sorted(
    (pathlib.Path(__file__).parent.parent.parent / "configs").glob("*.py"))


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigsTest(parameterized.TestCase):

  def test_there_are_configs(self):
    self.assertNotEmpty(CONFIGS)

  @parameterized.named_parameters((p.stem, p) for p in CONFIGS)
  def test_get_config(self, path):
    module = load(path)
    self.assertIn("python ", module.get_config.__doc__ or "",
                  "get_config's docstring gives the launch command")
    config = module.get_config()
    self.assertIsInstance(config, ml_collections.ConfigDict)
    self.assertNotEmpty(config.to_dict())

  def test_bench_quick_is_smaller(self):
    module = load(CONFIGS[0].parent / "bench_adv.py")
    full, quick = module.get_config(), module.get_config("quick")
    self.assertLess(max(quick.rows), max(full.rows))


if __name__ == "__main__":
  absltest.main()
