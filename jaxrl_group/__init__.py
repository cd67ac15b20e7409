"""jaxrl_group: RL for language models with group-relative advantages, in JAX."""

from jaxrl_group import advantages
from jaxrl_group import losses

__version__ = "0.1.0"

__all__ = (
    "advantages",
    "losses",
)
