"""jaxrl_group: RL for language models with group-relative advantages, in JAX."""

from jaxrl_group import advantages
from jaxrl_group import losses
from jaxrl_group import models
from jaxrl_group import parallel
from jaxrl_group import sampling
from jaxrl_group import tasks
from jaxrl_group import train

__version__ = "0.1.0"

__all__ = (
    "advantages",
    "losses",
    "models",
    "parallel",
    "sampling",
    "tasks",
    "train",
)
