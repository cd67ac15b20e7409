"""End to end: SFT then RL on add2, resume, devices, and config errors."""

import io
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from jaxrl_group.train import build as build_lib
from jaxrl_group.train import loop
from jaxrl_group.train import metrics as metrics_lib
from tests.train import common


def _rl_rows(workdir):
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  out = {}
  for r in rows:
    keys = {k: v for k, v in r.items() if k.startswith("rl/")
            and not k.startswith("rl/eval")}
    if keys:
      out[r["step"]] = keys  # a resumed run rewrites its steps: keep last
  return out


class EndToEndTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.ref_dir = os.path.join(cls.tmp.name, "ref")
    c = common.tiny_config(**{"rl.steps": 3, "log.plot": True,
                              "log.tensorboard": True, "log.progress": True})
    cls.stream = io.StringIO()
    cls.summary = loop.run(c, cls.ref_dir, stream=cls.stream)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_three_step_run_writes_everything(self):
    s = self.summary
    self.assertEqual(s["rl_steps"], 3)
    self.assertEqual(s["devices"], 8)
    for k in ("sft_accuracy", "final_accuracy", "accuracy_gain", "wall_s"):
      self.assertIn(k, s)
    rows = _rl_rows(self.ref_dir)
    self.assertEqual(sorted(rows), [1, 2, 3])
    self.assertIn("rl/reward", rows[1])
    with open(os.path.join(self.ref_dir, "curves.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertTrue(os.path.exists(os.path.join(self.ref_dir,
                                                "summary.txt")))
    self.assertNotEmpty(os.listdir(os.path.join(self.ref_dir, "tb")))
    self.assertIn("rl", self.stream.getvalue())
    ckpts = os.listdir(os.path.join(self.ref_dir, "checkpoints", "rl"))
    self.assertIn("3", ckpts)

  def test_resume_gives_identical_metrics(self):
    workdir = os.path.join(self.tmp.name, "resumed")
    loop.run(common.tiny_config(**{"rl.steps": 2}), workdir,
             stream=io.StringIO())
    self.assertEqual(sorted(_rl_rows(workdir)), [1, 2])
    summary = loop.run(common.tiny_config(**{"rl.steps": 3}), workdir,
                       stream=io.StringIO())
    self.assertEqual(summary["rl_steps"], 3)
    self.assertEqual(summary["sft_accuracy"], self.summary["sft_accuracy"])
    got, want = _rl_rows(workdir), _rl_rows(self.ref_dir)
    self.assertEqual(sorted(got), [1, 2, 3])
    for step in (1, 2, 3):
      self.assertEqual(got[step], want[step], f"step {step}")

  def test_one_device_equals_eight(self):
    workdir = os.path.join(self.tmp.name, "one")
    summary = loop.run(common.tiny_config(**{"rl.steps": 3,
                                             "mesh.num_devices": 1}),
                       workdir, stream=io.StringIO())
    self.assertEqual(summary["devices"], 8)  # visible; the mesh used 1
    got, want = _rl_rows(workdir), _rl_rows(self.ref_dir)
    for step in (1, 2, 3):
      for k, v in want[step].items():
        np.testing.assert_allclose(got[step][k], v, rtol=2e-4, atol=2e-5,
                                   err_msg=f"step {step} {k}")


class ConfigErrorsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("unknown_estimator", {"advantage.name": "grpoo"},
       "known names: aapo"),
      ("group_too_small", {"advantage.name": "grpo",
                           "sampler.group_size": 1}, "G >= 2"),
      ("prompt_too_long", {"model.max_seq_len": 8},
       "config.model.max_seq_len=8"),
      ("answer_does_not_fit", {"sampler.max_new_tokens": 2},
       "max_new_tokens=2"),
      ("unknown_loss", {"loss.surrogate": "ppo"}, "unknown surrogate"),
      ("unknown_task", {"task.name": "add9"}, "config.task"),
      ("unknown_model", {"model.name": "gpt5"}, "known models"),
      ("bad_kwargs", {"advantage.kwargs": "eps"}, "key=value"),
      ("chain_kwargs", {"advantage.name": "grpo,clip",
                        "advantage.kwargs": "eps=1e-4"}, "name.eps"),
      ("temperature", {"sampler.temperature": 0.0}, "temperature"),
  )
  def test_build_rejects(self, overrides, message):
    c = common.tiny_config(**overrides)
    with self.assertRaisesRegex(build_lib.ConfigError, message):
      build_lib.build(c)

  def test_estimator_options_reach_the_estimator(self):
    c = common.tiny_config(**{"advantage.name": "grpo",
                              "advantage.kwargs": "std='population',eps=1e-4",
                              "advantage.preset": "trl"})
    build_lib.build(c)
    c = common.tiny_config(**{"advantage.name": "grpo",
                              "advantage.kwargs": "nope=1"})
    with self.assertRaisesRegex(build_lib.ConfigError, "nope"):
      build_lib.build(c)

  def test_rl_schedule_counts_rl_steps(self):
    # Each RL step makes num_iterations x num_minibatches updates; warm-up
    # and cosine decay are given in RL steps and must span all of them.
    c = common.tiny_config(**{
        "optim.schedule": "cosine", "optim.lr": 1e-3,
        "optim.warmup_steps": 10, "rl.steps": 100,
        "loss.num_iterations": 2, "loss.num_minibatches": 2})
    sched = build_lib.build(c).rl_schedule
    self.assertAlmostEqual(float(sched(40)), 1e-3, places=9)   # warmed up
    self.assertAlmostEqual(float(sched(20)), 0.5e-3, places=9)  # mid warm-up
    # Half way through the decay (update 40 + 180): half the peak rate.
    self.assertAlmostEqual(float(sched(220)), 0.5e-3, places=6)
    self.assertGreater(float(sched(399)), 0.0)
    self.assertAlmostEqual(float(sched(400)), 0.0, places=9)
    # The supervised phase makes one update per step.
    c = common.tiny_config(**{"optim.schedule": "cosine", "sft.lr": 1e-2,
                              "sft.warmup_steps": 5, "sft.steps": 50})
    sft = build_lib.build(c).sft_schedule
    self.assertAlmostEqual(float(sft(5)), 1e-2, places=9)
    self.assertAlmostEqual(float(sft(50)), 0.0, places=9)
    # A phase of zero steps (e.g. SFT only) still builds.
    build_lib.build(common.tiny_config(**{"optim.schedule": "cosine",
                                          "rl.steps": 0}))

  @parameterized.named_parameters(
      ("mesh_sizes", {"mesh.data": 3}, "config.mesh"),
      ("batch_split", {"rl.prompts_per_step": 12}, "rl.prompts_per_step"),
      ("rules", {"mesh.rules": "zero3"}, "mesh.rules"),
  )
  def test_mesh_errors(self, overrides, message):
    with self.assertRaisesRegex(build_lib.ConfigError, message):
      loop.make_mesh_and_rules(common.tiny_config(**overrides))


if __name__ == "__main__":
  absltest.main()
