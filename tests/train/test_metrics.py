"""Metric writers, progress bar, curve plots and summary files."""

import io
import json
import math
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_group import train
from jaxrl_group.train import metrics
from jaxrl_group.train.metrics import JsonlWriter
from jaxrl_group.train.metrics import MultiWriter
from jaxrl_group.train.metrics import ProgressBar
from jaxrl_group.train.metrics import read_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_exports():
  for name in train.__all__:
    assert hasattr(train, name), name


def test_jsonl_round_trip_with_numpy_jax_and_non_finite(tmp_path):
  path = tmp_path / "logs" / "metrics.jsonl"
  with JsonlWriter(path) as w:
    w.write_scalars(0, {"rl/reward": np.float32(0.5),
                        "rl/acc": jnp.asarray(0.25),
                        "rl/count": np.int64(7), "rl/flag": np.bool_(True),
                        "loss": jnp.asarray([1.5], jnp.bfloat16)})
    w.write_scalars(np.int32(1), {"loss": float("nan"),
                                  "grad_norm": jnp.inf, "neg": -np.inf,
                                  "phase": "rl", "missing": None})
  lines = path.read_text().splitlines()
  assert len(lines) == 2
  # Every line is strict JSON (no bare NaN / Infinity tokens).
  first = json.loads(lines[0], parse_constant=pytest.fail)
  assert first == {"step": 0, "rl/reward": 0.5, "rl/acc": 0.25,
                   "rl/count": 7, "rl/flag": True, "loss": 1.5}
  assert type(first["rl/count"]) is int
  second = json.loads(lines[1], parse_constant=pytest.fail)
  assert second["loss"] == "NaN" and second["grad_norm"] == "Infinity"
  records = read_jsonl(path)
  assert records[0] == first
  assert records[1]["step"] == 1
  assert math.isnan(records[1]["loss"])
  assert records[1]["grad_norm"] == math.inf
  assert records[1]["neg"] == -math.inf
  assert records[1]["phase"] == "rl" and records[1]["missing"] is None


def test_jsonl_appends_and_flushes_each_write(tmp_path):
  path = tmp_path / "m.jsonl"
  w = JsonlWriter(path)
  w.write_scalars(1, {"a": 1.0})
  # Readable before close: every write is flushed.
  assert read_jsonl(path) == [{"step": 1, "a": 1.0}]
  w.close()
  with JsonlWriter(path) as w2:
    w2.write_scalars(2, {"a": 2.0})
  assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_read_jsonl_skips_a_cut_last_line_only(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a"')
  assert read_jsonl(path) == [{"step": 0, "a": 1}]
  path.write_text('{"step": 0\n{"step": 1, "a": 2}\n')
  with pytest.raises(ValueError, match="line 1"):
    read_jsonl(path)


def test_jsonl_errors(tmp_path):
  with JsonlWriter(tmp_path / "m.jsonl") as w:
    with pytest.raises(ValueError, match="'x'.*shape \\(3,\\)"):
      w.write_scalars(0, {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="'step'"):
      w.write_scalars(0, {"step": 1})
    with pytest.raises(TypeError, match="'obj'"):
      w.write_scalars(0, {"obj": object()})


def _read_events(path):
  """Scalars (tag, step, value) of a TFRecord event file, by hand."""
  # pylint: disable-next=g-import-not-at-top
  from tensorboardX.proto import event_pb2
  data = path.read_bytes()
  out, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    payload = data[pos + 12:pos + 12 + length]
    pos += 12 + length + 4  # length, its crc, payload, payload crc
    event = event_pb2.Event.FromString(payload)
    for v in event.summary.value:
      out.append((v.tag, event.step, v.simple_value))
  return out


def test_tensorboard_writer_writes_events(tmp_path):
  logdir = tmp_path / "tb"
  with metrics.TensorBoardWriter(logdir) as w:
    w.write_scalars(3, {"rl/reward": np.float32(0.75), "phase": "rl"})
    w.write_scalars(4, {"rl/reward": jnp.asarray(0.5), "loss": math.nan})
  files = list(logdir.glob("events.out.tfevents.*"))
  assert len(files) == 1 and files[0].stat().st_size > 0
  events = _read_events(files[0])
  assert events[:2] == [("rl/reward", 3, 0.75), ("rl/reward", 4, 0.5)]
  assert events[2][:2] == ("loss", 4) and math.isnan(events[2][2])
  assert len(events) == 3  # the string was skipped


def test_tensorboard_writer_missing_package(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match="tensorboardX"):
    metrics.TensorBoardWriter(tmp_path)


def test_multi_writer(tmp_path):
  with MultiWriter([JsonlWriter(tmp_path / "a.jsonl"),
                    JsonlWriter(tmp_path / "b.jsonl")]) as w:
    w.write_scalars(5, {"x": 1})
    w.flush()
  assert read_jsonl(tmp_path / "a.jsonl") == [{"step": 5, "x": 1}]
  assert read_jsonl(tmp_path / "b.jsonl") == [{"step": 5, "x": 1}]
  assert all(inner._file.closed for inner in w.writers)


class FakeClock:

  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_progress_bar_tty_redraws_in_place():
  out, clock = io.StringIO(), FakeClock()
  bar = ProgressBar(10, desc="rl", stream=out, width=10, tty=True,
                    clock=clock)
  clock.t += 5.0
  bar.update(5, reward=0.123456, acc=np.float32(0.5))
  # 5 steps in 5 s: 1 step/s, 5 steps left: ETA 5 s.
  assert out.getvalue() == ("\rrl  50%|#####-----|  5/10 [00:05<00:05, "
                            "1.00 step/s] reward=0.1235 acc=0.5")
  clock.t += 5.0
  bar.update(5, acc=1.0)
  bar.close()
  text = out.getvalue()
  assert text.endswith("\n") and text.count("\n") == 1
  assert text.split("\r")[-1] == (
      "rl 100%|##########| 10/10 [00:10<00:00, 1.00 step/s] "
      "reward=0.1235 acc=1\n")


def test_progress_bar_without_tty_prints_every_few_percent():
  out, clock = io.StringIO(), FakeClock()
  with ProgressBar(100, desc="sft", stream=out, every_percent=25,
                   clock=clock) as bar:
    assert not bar.tty  # a StringIO is no terminal
    for _ in range(100):
      clock.t += 0.5
      bar.update(1, loss=2.0)
  lines = out.getvalue().splitlines()
  assert "\r" not in out.getvalue()
  # Lines at 1% (first update), 25, 50, 75 and 100%; close adds none.
  assert [line.split("|")[0] for line in lines] == [
      "sft   1%", "sft  25%", "sft  50%", "sft  75%", "sft 100%"]
  assert lines[-1].endswith("[00:50<00:00, 2.00 step/s] loss=2")
  # 12.5 s in, 75 steps left at 2 step/s: 37.5 s (both truncated).
  assert "[00:12<00:37, 2.00 step/s]" in lines[1]


def test_progress_bar_close_prints_unfinished_state_and_errors():
  out = io.StringIO()
  bar = ProgressBar(10, stream=out, every_percent=50, clock=FakeClock())
  bar.update(3)
  bar.update(1)
  bar.close()
  bar.close()
  assert [line.split("[")[0] for line in out.getvalue().splitlines()] == [
      " 30%|######--------------|  3/10 ", " 40%|########------------|  4/10 "]
  with pytest.raises(ValueError, match="total"):
    ProgressBar(-1)
  empty = io.StringIO()
  with ProgressBar(0, stream=empty, clock=FakeClock()):
    pass
  assert empty.getvalue().startswith("100%|")


def test_plot_curves_writes_png(tmp_path):
  records = ([{"step": s, "sft/loss": 2.0 / (s + 1)} for s in range(5)]
             + [{"step": s, "rl/reward": s / 10, "rl/acc": "NaN"}
                for s in range(8)])
  png = tmp_path / "plots" / "curves.png"
  plotted = metrics.plot_curves(records, png,
                                keys=["sft/loss", "rl/reward", "rl/kl",
                                      "rl/acc"], title="run")
  assert plotted == ["sft/loss", "rl/reward", "rl/acc"]  # rl/kl missing
  assert png.read_bytes()[:8] == PNG_MAGIC
  assert metrics.plot_curves(records, tmp_path / "glob.png",
                             keys=["rl/*"]) == ["rl/reward", "rl/acc"]
  assert metrics.plot_curves(records, tmp_path / "all.png", keys=None) == [
      "sft/loss", "rl/reward", "rl/acc"]
  none = tmp_path / "none.png"
  assert metrics.plot_curves(records, none, keys=["nope"]) == []
  assert none.read_bytes()[:8] == PNG_MAGIC


def test_write_summary(tmp_path):
  path = tmp_path / "out" / "summary.txt"
  text = metrics.write_summary(path, {"accuracy": np.float32(0.123456789),
                                      "steps": 10, "model": "tiny",
                                      "reward": jnp.asarray(0.5)})
  assert text == "accuracy: 0.123457\nsteps: 10\nmodel: tiny\nreward: 0.5\n"
  assert path.read_text() == text
  metrics.write_summary(path, ["line one", "line two"])
  assert path.read_text() == "line one\nline two\n"
  metrics.write_summary(path, "done\n")
  assert path.read_text() == "done\n"
