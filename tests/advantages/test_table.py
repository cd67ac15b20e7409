"""The README's estimator table is generated from the registry."""

import pathlib

from absl.testing import absltest

from jaxrl_group import advantages as A
from jaxrl_group.advantages import _table

README = pathlib.Path(__file__).parent.parent.parent / "README.md"


class TableTest(absltest.TestCase):

  def test_readme_table_is_up_to_date(self):
    text = README.read_text(encoding="utf-8")
    self.assertEqual(
        text, _table.replace_table(text),
        "README.md's estimator table is stale: run "
        "python -m jaxrl_group.advantages._table README.md")

  def test_every_estimator_has_a_row_with_a_summary(self):
    table = _table.estimator_table()
    for name in A.REGISTRY:
      row = next(l for l in table.splitlines() if l.startswith(f"| `{name}`"))
      self.assertNotIn("|  |", row, name)

  def test_arxiv_ids_come_from_docstrings(self):
    row = next(l for l in _table.estimator_table().splitlines()
               if l.startswith("| `grpo` "))
    self.assertIn("2402.03300", row)


if __name__ == "__main__":
  absltest.main()
