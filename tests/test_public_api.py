"""The public API: names exported and importable."""

from absl.testing import absltest

import jaxrl_group
from jaxrl_group import advantages
from jaxrl_group import losses


class PublicApiTest(absltest.TestCase):

  def test_all_names_exist(self):
    for name in advantages.__all__:
      self.assertTrue(hasattr(advantages, name), name)
    self.assertIs(jaxrl_group.advantages, advantages)

  def test_losses_names_exist(self):
    for name in losses.__all__:
      self.assertTrue(hasattr(losses, name), name)
    self.assertIs(jaxrl_group.losses, losses)
    for name, fn in losses.SURROGATES.items():
      self.assertIs(getattr(losses, name), fn, name)

  def test_subpackages_export_their_names(self):
    for pkg in (jaxrl_group.models, jaxrl_group.sampling, jaxrl_group.tasks,
                jaxrl_group.parallel, jaxrl_group.train):
      names = getattr(pkg, "__all__", None) or [
          n for n in dir(pkg) if not n.startswith("_")]
      self.assertNotEmpty(names, pkg.__name__)
      for name in names:
        self.assertTrue(hasattr(pkg, name), f"{pkg.__name__}.{name}")
    for name in jaxrl_group.__all__:
      self.assertTrue(hasattr(jaxrl_group, name), name)

  def test_every_registered_factory_is_exported(self):
    for name, factory in advantages.REGISTRY.items():
      self.assertIs(getattr(advantages, name), factory, name)


if __name__ == "__main__":
  absltest.main()
