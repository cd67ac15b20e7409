"""Training: the train state and steps, the run loop, metrics and checkpoints."""

from jaxrl_group.train.build import ConfigError
from jaxrl_group.train.build import Experiment
from jaxrl_group.train.checkpoint import Checkpointer
from jaxrl_group.train.loop import run
from jaxrl_group.train.metrics import JsonlWriter
from jaxrl_group.train.metrics import MetricWriter
from jaxrl_group.train.metrics import MultiWriter
from jaxrl_group.train.metrics import ProgressBar
from jaxrl_group.train.metrics import TensorBoardWriter
from jaxrl_group.train.metrics import plot_curves
from jaxrl_group.train.metrics import read_jsonl
from jaxrl_group.train.metrics import write_summary
from jaxrl_group.train.state import TrainState
from jaxrl_group.train.step import make_eval_fn
from jaxrl_group.train.step import make_rl_step
from jaxrl_group.train.step import make_rollout_fn
from jaxrl_group.train.step import make_sft_step
from jaxrl_group.train.step import on_device_steps
from jaxrl_group.train.step import SamplerSettings
from jaxrl_group.train.step import with_batches

__all__ = (
    "ConfigError",
    "Experiment",
    "make_eval_fn",
    "make_rl_step",
    "make_rollout_fn",
    "make_sft_step",
    "on_device_steps",
    "run",
    "SamplerSettings",
    "TrainState",
    "with_batches",
    "Checkpointer",
    "JsonlWriter",
    "MetricWriter",
    "MultiWriter",
    "ProgressBar",
    "TensorBoardWriter",
    "plot_curves",
    "read_jsonl",
    "write_summary",
)
