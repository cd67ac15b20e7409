"""Hyperparameters as state, so schedules change them without recompiling.

Modelled on optax's ``inject_hyperparams``: numeric hyperparameters become
arrays in the transform state; a callable hyperparameter is a schedule of the
update count, evaluated inside ``update``.
"""

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import safe_increment


class InjectHyperparamsState(NamedTuple):
  """State of a transform with injected hyperparameters."""

  count: jax.Array  # shape=(), dtype=jnp.int32; number of updates so far
  hyperparams: dict[str, jax.Array]  # current values, readable and settable
  inner_state: Any


def _is_numeric(v: Any) -> bool:
  if isinstance(v, bool):
    return False
  return isinstance(v, (int, float, jax.Array)) or hasattr(v, "__array__")


def inject_hyperparams(factory: Callable[..., AdvantageTransform], *,
                       static_args: Iterable[str] = (),
                       hyperparam_dtype=None,
                       ) -> Callable[..., AdvantageTransform]:
  """Wraps ``factory`` so numeric hyperparameters live in the state.

  Example::

    tx = inject_hyperparams(grpo)(eps=1e-6, std="population")
    state = tx.init(rewards_BxG)
    state = state._replace(hyperparams={**state.hyperparams, "eps": 1e-4})
    adv, state = jax.jit(tx.update)(rewards_BxG, state)   # no recompile

  A callable hyperparameter is a schedule ``f(count) -> value`` evaluated on
  the update count. Strings, bools, None and names in ``static_args`` stay
  static (changing them means building a new transform).

  Args:
    factory: an advantage-transform factory taking keyword arguments.
    static_args: names to keep static even if numeric.
    hyperparam_dtype: dtype of the float hyperparameters (default float32).

  Returns:
    A factory with the same keyword arguments returning the wrapped
    ``AdvantageTransform``.
  """
  static_args = frozenset(static_args)
  dtype = hyperparam_dtype or jnp.float32

  def wrapped(**hparams: Any) -> AdvantageTransform:
    static = {k: v for k, v in hparams.items()
              if k in static_args or not (callable(v) or _is_numeric(v))}
    schedules = {k: v for k, v in hparams.items()
                 if k not in static and callable(v)}
    numeric = {k: v for k, v in hparams.items()
               if k not in static and k not in schedules}
    # Build once eagerly so bad arguments fail here, not inside jit.
    factory(**{**hparams, **{k: f(0) for k, f in schedules.items()}})

    def as_array(v):
      v = jnp.asarray(v)
      return v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v

    def current(count) -> dict[str, jax.Array]:
      out = {k: as_array(v) for k, v in numeric.items()}
      out.update({k: as_array(f(count)) for k, f in schedules.items()})
      return out

    def init_fn(rewards_BxG):
      count = jnp.zeros([], jnp.int32)
      hp = current(count)
      inner = factory(**static, **hp).init(rewards_BxG)
      return InjectHyperparamsState(count, hp, inner)

    def update_fn(values, state, *, mask_BxG=None, **ctx):
      hp = dict(state.hyperparams)
      hp.update({k: as_array(f(state.count)) for k, f in schedules.items()})
      inner_tx = factory(**static, **hp)
      adv, inner = inner_tx.update(values, state.inner_state,
                                   mask_BxG=mask_BxG, **ctx)
      return adv, InjectHyperparamsState(safe_increment(state.count), hp,
                                         inner)

    return AdvantageTransform(init_fn, update_fn)

  return wrapped
