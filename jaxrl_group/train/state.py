"""The train state: everything a step reads and writes, one pytree."""

from typing import Any, NamedTuple

import jax


class TrainState(NamedTuple):
  """A pytree carried from step to step (and checkpointed whole).

  Attributes:
    step: int32 scalar, the number of completed steps of this phase.
    params: the policy's parameter dict (``jaxrl_group.models``).
    opt_state: the optax state.
    adv_state: the advantage transform's state (``EmptyState()`` if none).
    key: a typed PRNG key; step ``s`` uses ``fold_in(key, s)``.
    ref_params: frozen reference parameters (KL penalty, reference
      rollouts), or None when the config needs none.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  adv_state: Any
  key: jax.Array
  ref_params: Any = None
