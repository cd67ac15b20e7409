"""The table of registered estimators, generated from the registry.

The README's estimator table is this function's output, so it cannot drift
from the code: ``tests/advantages/test_table.py`` compares them. Regenerate it
with ``python -m jaxrl_group.advantages._table README.md``.
"""

import re
import sys

from jaxrl_group.advantages._registry import INFO

BEGIN = "<!-- estimator-table:begin -->"
END = "<!-- estimator-table:end -->"
_ARXIV = re.compile(r"arXiv[\s:]*(\d{4}\.\d{4,5})")


def _summary(doc: str) -> str:
  return (doc or "").strip().splitlines()[0].rstrip(".") if doc else ""


def estimator_table() -> str:
  """A markdown table: name, summary, arXiv ids, level, state, context."""
  rows = ["| name | method | arXiv | level | state | requires |",
          "|---|---|---|---|---|---|"]
  for name in sorted(INFO):
    info = INFO[name]
    doc = info.factory.__doc__ or ""
    ids = list(dict.fromkeys(_ARXIV.findall(doc)))
    summary = _summary(doc).replace("|", "\\|")
    rows.append(
        f"| `{name}` | {summary} | {', '.join(ids) or '—'} | "
        f"{'token' if info.token_level else 'sequence'} | "
        f"{'stateful' if info.stateful else '—'} | "
        f"{', '.join(f'`{k}`' for k in info.requires) or '—'} |")
  return "\n".join(rows)


def replace_table(text: str) -> str:
  """Returns ``text`` with the part between the markers regenerated."""
  if BEGIN not in text or END not in text:
    raise ValueError(f"the markers {BEGIN} and {END} are missing.")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{BEGIN}\n{estimator_table()}\n{END}{tail}"


if __name__ == "__main__":
  import jaxrl_group.advantages  # pylint: disable=g-import-not-at-top,unused-import
  path = sys.argv[1]
  with open(path, encoding="utf-8") as f:
    new = replace_table(f.read())
  with open(path, "w", encoding="utf-8") as f:
    f.write(new)
