"""Every notebook's code cells run top to bottom without error."""

import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax

from jaxrl_group import advantages as A

NOTEBOOKS = sorted(
    (pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


class NotebooksTest(parameterized.TestCase):

  def test_there_are_notebooks(self):
    self.assertNotEmpty(NOTEBOOKS)

  @parameterized.named_parameters((p.stem, p) for p in NOTEBOOKS)
  def test_runs(self, path):
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells
                       if c["cell_type"] == "code")
    registered = set(A.REGISTRY)
    try:
      # Notebooks use the default rank promotion of a fresh session.
      with jax.numpy_rank_promotion("allow"):
        exec(compile(source, str(path), "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
    finally:
      for name in set(A.REGISTRY) - registered:
        del A.REGISTRY[name], A.INFO[name]


if __name__ == "__main__":
  absltest.main()
