"""Metric writers, a text progress bar, curve plots and summary files.

Writers share one interface, ``write_scalars(step, scalars)``, modelled on
clu's metric writers (which need TensorFlow, so they are not used here):
``JsonlWriter`` appends one JSON object per step, ``TensorBoardWriter``
writes tensorboardX event files, and ``MultiWriter`` fans out to several.
"""

import fnmatch
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

import numpy as np

# Non-finite floats are not JSON; they are written as these strings (the
# spellings Python's json module reads back) and read back as floats.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _to_python(key: str, value: Any) -> bool | int | float | str | None:
  """A JSON-able Python scalar from a Python, numpy or JAX scalar."""
  if value is None or isinstance(value, str):
    return value
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(
        f"metric {key!r} must be a number, got {type(value).__name__}."
    ) from e
  if arr.size != 1:
    raise ValueError(
        f"metric {key!r} must be a single number, got an array of shape "
        f"{arr.shape}; reduce it first, e.g. x.mean().")
  arr = arr.reshape(())
  if arr.dtype == np.bool_:
    return bool(arr)
  if np.issubdtype(arr.dtype, np.integer):
    return int(arr)
  try:
    # float64 also covers bfloat16 and other ml_dtypes scalars.
    return float(arr.astype(np.float64))
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"metric {key!r} must be a number, got dtype {arr.dtype}.") from e


def _json_safe(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return "NaN" if math.isnan(x) else "Infinity" if x > 0 else "-Infinity"
  return x


class MetricWriter:
  """The writer interface: ``write_scalars``, ``flush`` and ``close``."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Records ``scalars`` (name -> number) at ``step``."""
    raise NotImplementedError

  def flush(self) -> None:
    """Pushes buffered records to storage."""

  def close(self) -> None:
    """Flushes and releases the writer; later writes are errors."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class JsonlWriter(MetricWriter):
  """Appends ``{"step": s, name: value, ...}`` lines to a JSONL file.

  Values may be Python, numpy or JAX scalars (size-1 arrays); integers and
  booleans stay integers and booleans, strings and None (null) stay as they
  are, everything else becomes a float.
  NaN and infinities are written as the strings ``"NaN"``, ``"Infinity"``
  and ``"-Infinity"`` (plain JSON has no such numbers), and
  :func:`read_jsonl` turns them back into floats. Every write is flushed,
  so the file is complete up to the last step even if the job dies.
  """

  def __init__(self, path: str | os.PathLike):
    """Opens ``path`` for appending, creating its directory if needed."""
    self.path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(parent, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if "step" in scalars:
      raise ValueError(
          "scalars must not contain the key 'step'; the step is the first "
          "argument of write_scalars.")
    record = {"step": int(step)}
    for key, value in scalars.items():
      record[str(key)] = _json_safe(_to_python(key, value))
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads the records of a JSONL metrics file.

  Args:
    path: a file written by :class:`JsonlWriter`.

  Returns:
    One dict per line, with ``"NaN"``/``"Infinity"``/``"-Infinity"`` turned
    back into floats. A last line cut off mid-write (a job killed while
    writing) is skipped; a bad line elsewhere raises ValueError.
  """
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}: line {i + 1} is not JSON: {e}") from e
    records.append({
        k: _NON_FINITE.get(v, v) if isinstance(v, str) else v
        for k, v in record.items()})
  return records


class TensorBoardWriter(MetricWriter):
  """Writes scalars to TensorBoard event files with tensorboardX.

  String and None values are skipped (TensorBoard scalars are numbers);
  NaN and infinities are written as they are. Each write is flushed.
  """

  def __init__(self, logdir: str | os.PathLike, **kwargs):
    """Opens a ``tensorboardX.SummaryWriter`` on ``logdir``.

    Args:
      logdir: directory for the event files (created if needed).
      **kwargs: passed on to ``tensorboardX.SummaryWriter``.
    """
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "TensorBoardWriter needs the tensorboardX package; install it with "
          "`pip install tensorboardX==2.6.5` or use JsonlWriter.") from e
    self.logdir = os.fspath(logdir)
    self._writer = tensorboardX.SummaryWriter(self.logdir, **kwargs)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for key, value in scalars.items():
      value = _to_python(key, value)
      if value is None or isinstance(value, str):
        continue
      self._writer.add_scalar(str(key), float(value), global_step=int(step))
    self._writer.flush()

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter(MetricWriter):
  """Sends every call to each of several writers, in order."""

  def __init__(self, writers: Iterable[MetricWriter]):
    self.writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(max(seconds, 0.0))  # truncated, as most progress bars do
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt_value(value: Any) -> str:
  if isinstance(value, str):
    return value
  try:
    value = _to_python("postfix", value)
  except (TypeError, ValueError):
    return str(value)
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _is_tty(stream: TextIO) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):
    return False


class ProgressBar:
  """A small text progress bar with rate, ETA and metric values.

  On a terminal the line is redrawn in place (carriage return). On anything
  else (a log file, a pipe, a notebook's captured stream) a full line is
  printed each time another ``every_percent`` of the total is done, and at
  the end, so logs stay short. A line reads, e.g.::

    rl  40%|########------------|  40/100 [00:08<00:12, 5.00 step/s] acc=0.5

  The rate is the average since the bar was created (the first step's
  compilation included).
  """

  def __init__(self, total: int, *, desc: str = "",
               stream: TextIO | None = None, width: int = 20,
               every_percent: float = 10.0, tty: bool | None = None,
               clock: Callable[[], float] = time.perf_counter):
    """Starts the bar (nothing is printed until the first update).

    Args:
      total: the number of steps (>= 0).
      desc: a label in front of the bar.
      stream: where to write; ``sys.stderr`` when None.
      width: the bar's width in characters.
      every_percent: without a terminal, print a line each time this much
        more of the total is done.
      tty: force (True) or forbid (False) in-place redrawing; None asks the
        stream.
      clock: seconds as a float; for tests.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
      raise ValueError(f"ProgressBar: total must be an int >= 0, got "
                       f"{total!r}.")
    if not every_percent > 0:
      raise ValueError(f"ProgressBar: every_percent must be > 0, got "
                       f"{every_percent!r}.")
    self.total = total
    self.desc = desc
    self.stream = sys.stderr if stream is None else stream
    self.width = max(int(width), 1)
    self.every_percent = float(every_percent)
    self.tty = _is_tty(self.stream) if tty is None else bool(tty)
    self.n = 0
    self.postfix: dict[str, Any] = {}
    self._clock = clock
    self._start = clock()
    self._last_len = 0
    self._printed_at = None  # n of the last line printed without a TTY
    self._next_percent = 0.0
    self._closed = False

  def _fraction(self) -> float:
    return 1.0 if self.total == 0 else min(self.n / self.total, 1.0)

  def format(self) -> str:
    """The current line, without carriage return or newline."""
    frac = self._fraction()
    filled = int(frac * self.width)
    bar = "#" * filled + "-" * (self.width - filled)
    elapsed = self._clock() - self._start
    rate = self.n / elapsed if elapsed > 0 else math.nan
    remaining = self.total - self.n
    eta = remaining / rate if rate > 0 else (0.0 if remaining <= 0 else
                                             math.nan)
    digits = len(str(self.total))
    rate_s = f"{rate:.2f}" if math.isfinite(rate) else "?"
    line = (f"{self.desc + ' ' if self.desc else ''}"
            f"{int(frac * 100):3d}%|{bar}| {self.n:{digits}d}/{self.total} "
            f"[{_fmt_time(elapsed)}<{_fmt_time(eta)}, {rate_s} step/s]")
    if self.postfix:
      line += " " + " ".join(f"{k}={_fmt_value(v)}"
                             for k, v in self.postfix.items())
    return line

  def update(self, n: int = 1, **postfix: Any) -> None:
    """Advances by ``n`` steps and sets the shown metric values.

    Args:
      n: steps done since the last update.
      **postfix: metrics to show, e.g. ``reward=0.5, acc=0.25``; they stay
        shown until replaced.
    """
    self.n += int(n)
    self.postfix.update(postfix)
    if self.tty:
      self._draw()
      return
    percent = 100.0 * self._fraction()
    if percent >= self._next_percent or self.n >= self.total:
      if self._printed_at != self.n:
        self._print_line()
      while self._next_percent <= percent:
        self._next_percent += self.every_percent

  def _draw(self) -> None:
    line = self.format()
    pad = " " * max(self._last_len - len(line), 0)
    self.stream.write("\r" + line + pad)
    self.stream.flush()
    self._last_len = len(line)

  def _print_line(self) -> None:
    self.stream.write(self.format() + "\n")
    self.stream.flush()
    self._printed_at = self.n

  def close(self) -> None:
    """Shows the final state and ends the line."""
    if self._closed:
      return
    self._closed = True
    if self.tty:
      self._draw()
      self.stream.write("\n")
      self.stream.flush()
    elif self._printed_at != self.n:
      self._print_line()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _as_float(value: Any) -> float:
  if isinstance(value, str):
    return _NON_FINITE.get(value, math.nan)
  if value is None or isinstance(value, bool):
    return math.nan if value is None else float(value)
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def plot_curves(records: Sequence[Mapping[str, Any]],
                png_path: str | os.PathLike, *,
                keys: Sequence[str] | None, title: str | None = None,
                x_key: str = "step") -> list[str]:
  """Plots metrics against the step into a PNG, one panel per metric.

  Records may come from several phases with prefixed names (``"sft/loss"``
  and ``"rl/reward"``): each key is drawn from the records that have it, so
  phases with their own step counts sit in their own panels. Missing keys
  are skipped. Needs matplotlib, imported here (Agg canvas, no pyplot, so
  no global backend is changed).

  Args:
    records: dicts as read by :func:`read_jsonl`.
    png_path: the image to write (its directory is created).
    keys: metric names; a name with ``*``, ``?`` or ``[`` is a glob pattern
      (``"rl/*"``). None plots every key other than ``x_key``.
    title: optional figure title.
    x_key: the key of the x axis; records without it use their index.

  Returns:
    The keys plotted, in order. With none present the PNG says so and the
    list is empty.
  """
  # pylint: disable=g-import-not-at-top
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError("plot_curves needs matplotlib; install it with "
                      "`pip install matplotlib`.") from e
  present = []
  for r in records:
    for k in r:
      if k != x_key and k not in present:
        present.append(k)
  if keys is None:
    keys = present
  chosen = []
  for pattern in keys:
    if any(c in pattern for c in "*?["):
      matches = [k for k in present if fnmatch.fnmatchcase(k, pattern)]
    else:
      matches = [pattern] if pattern in present else []
    chosen.extend(k for k in matches if k not in chosen)

  n = max(len(chosen), 1)
  fig = Figure(figsize=(7.0, 1.0 + 2.2 * n))
  FigureCanvasAgg(fig)
  axes = fig.subplots(n, 1, squeeze=False)[:, 0]
  for ax, key in zip(axes, chosen):
    xs, ys = [], []
    for i, r in enumerate(records):
      if key in r:
        xs.append(_as_float(r.get(x_key, i)))
        ys.append(_as_float(r[key]))
    ax.plot(xs, ys, marker="." if len(xs) < 50 else None, linewidth=1.2)
    ax.set_ylabel(key)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(x_key)
  if not chosen:
    axes[0].text(0.5, 0.5, f"no data for keys {list(keys)}",
                 ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_axis_off()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  png_path = os.fspath(png_path)
  os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
  fig.savefig(png_path, format="png", dpi=100)
  return chosen


def write_summary(path: str | os.PathLike,
                  lines_or_dict: str | Mapping[str, Any] | Iterable[str]
                  ) -> str:
  """Writes a short text summary (overwriting ``path``).

  Args:
    path: the text file (its directory is created).
    lines_or_dict: a string, lines, or a mapping written as ``key: value``
      lines (floats with 6 significant digits).

  Returns:
    The text written, ending with a newline.
  """
  if isinstance(lines_or_dict, str):
    text = lines_or_dict
  elif isinstance(lines_or_dict, Mapping):
    text = "\n".join(f"{k}: {_fmt_summary(v)}"
                     for k, v in lines_or_dict.items())
  else:
    text = "\n".join(str(line) for line in lines_or_dict)
  if not text.endswith("\n"):
    text += "\n"
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return text


def _fmt_summary(value: Any) -> str:
  if isinstance(value, (float, np.floating)):
    return f"{float(value):.6g}"
  if hasattr(value, "shape") and np.size(value) == 1:
    return _fmt_summary(_to_python("summary", value))
  return str(value)
