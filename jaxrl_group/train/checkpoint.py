"""Checkpoints of the train state and the data iterator's state, with orbax.

One step directory holds two items: ``state`` (the array pytree, saved with
``ocp.args.StandardSave``) and ``data`` (a small JSON dict, e.g. the data
iterator's position, saved with ``ocp.args.JsonSave``). Restoring reads the
structure, dtypes and shardings from an abstract state, so arrays land on
the devices the new run asks for, whatever mesh wrote them.
"""

import json
import os
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import orbax.checkpoint as ocp

_STATE = "state"
_DATA = "data"


def _is_typed_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype,
                                                     jax.dtypes.prng_key)


def _key_impl(abstract_key: jax.ShapeDtypeStruct):
  """The PRNG implementation of an abstract typed key (e.g. threefry2x32)."""
  impls = []

  def data(k):
    # key_impl takes key arrays, tracers included, but no ShapeDtypeStruct.
    impls.append(jax.random.key_impl(k))
    return jax.random.key_data(k)

  data_abstract = jax.eval_shape(data, abstract_key)
  return impls[0], data_abstract


def _key_data_sharding(sharding, key_ndim: int, data_ndim: int):
  """The sharding of a key array's data: the key's, trailing dims whole."""
  if isinstance(sharding, NamedSharding):
    spec = tuple(sharding.spec) + (None,) * (key_ndim - len(sharding.spec))
    spec += (None,) * (data_ndim - key_ndim)
    return NamedSharding(sharding.mesh, PartitionSpec(*spec),
                         memory_kind=sharding.memory_kind)
  return sharding  # e.g. SingleDeviceSharding, valid at any rank.


def _as_abstract(x: Any) -> Any:
  """A ``ShapeDtypeStruct`` (keeping the sharding) for an array leaf."""
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


class Checkpointer:
  """Saves and restores ``(state, data_state)`` pairs by step.

  A thin wrapper of ``ocp.CheckpointManager`` that

  * saves typed PRNG key arrays (``jax.random.key``) as their raw key data
    and wraps them back, with the implementation of the abstract key, on
    restore;
  * takes an abstract state whose ``jax.ShapeDtypeStruct`` leaves carry
    shardings: restored arrays land with those shardings and dtypes (e.g.
    on a different mesh than the one that saved them);
  * keeps the state's structure from the abstract state, so NamedTuple
    optimiser states, empty NamedTuples and None survive the round trip.

  A new run (nothing saved) has ``latest_step() is None``; ``restore`` then
  raises FileNotFoundError, so call it only when a step exists::

    ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3)
    if ckpt.latest_step() is not None:
      state, data_state = ckpt.restore(abstract_state)
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               save_interval_steps: int = 1, async_save: bool = False):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      directory: where the step directories go.
      max_to_keep: the newest this many checkpoints are kept; None keeps
        all.
      save_interval_steps: ``save`` writes only steps divisible by this
        (unless forced), and the first save into an empty directory
        (orbax's initial-save policy, so a run always has a checkpoint).
      async_save: write in a background thread; ``save`` returns once the
        arrays are staged. Call ``wait()`` or ``close()`` before the process
        ends.
    """
    if max_to_keep is not None and (isinstance(max_to_keep, bool) or
                                    not isinstance(max_to_keep, int) or
                                    max_to_keep < 1):
      raise ValueError(f"Checkpointer: max_to_keep must be an int >= 1 or "
                       f"None (keep all), got {max_to_keep!r}.")
    if (isinstance(save_interval_steps, bool) or
        not isinstance(save_interval_steps, int) or save_interval_steps < 1):
      raise ValueError(f"Checkpointer: save_interval_steps must be an int "
                       f">= 1, got {save_interval_steps!r}.")
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=bool(async_save),
        create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=(_STATE, _DATA))

  def save(self, step: int, state: Any, *, data_state: Any = None,
           force: bool = False) -> bool:
    """Saves ``state`` and ``data_state`` as ``step`` if the interval says so.

    Args:
      step: the step number (>= 0).
      state: a pytree of arrays (typed PRNG keys allowed).
      data_state: a small JSON-able value (dict, list, numbers, strings,
        None), e.g. the data iterator's position.
      force: save even if ``step`` is off the save interval.

    Returns:
      Whether a checkpoint was started: False for steps off the interval
      (except the first save into an empty directory) and for steps not
      after the latest saved one.

    Raises:
      TypeError: ``data_state`` is not JSON-able (checked before writing).
    """
    if isinstance(step, bool) or int(step) != step or step < 0:
      raise ValueError(f"Checkpointer.save: step must be an int >= 0, got "
                       f"{step!r}.")
    try:
      json.dumps(data_state, allow_nan=False)
    except (TypeError, ValueError) as e:
      raise TypeError(
          "Checkpointer.save: data_state must be JSON-able (dicts, lists, "
          f"str, finite numbers, None): {e}. Convert arrays with .tolist() "
          "or float().") from e
    saved_state = jax.tree.map(
        lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, state)
    return self._manager.save(
        int(step),
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(saved_state),
            _DATA: ocp.args.JsonSave({"data_state": data_state}),
        }),
        force=force)

  def should_save(self, step: int) -> bool:
    """Whether ``save(step, ...)`` would write (without ``force``)."""
    return self._manager.should_save(int(step))

  def latest_step(self) -> int | None:
    """The newest saved step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The saved steps, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, *,
              step: int | None = None) -> tuple[Any, Any]:
    """Restores ``(state, data_state)`` into the layout of ``abstract_state``.

    Args:
      abstract_state: the state's structure with ``jax.ShapeDtypeStruct``
        leaves carrying shardings (e.g. ``jax.eval_shape`` of the init
        function, with ``parallel.with_shardings``). Concrete arrays are
        taken as their shape, dtype and sharding. Typed key leaves come back
        as typed keys of the same implementation.
      step: the step to restore; the latest when None.

    Returns:
      The state, with the structure, dtypes and shardings of
      ``abstract_state``, and the saved ``data_state``.

    Raises:
      FileNotFoundError: nothing saved yet, or no checkpoint for ``step``.
    """
    # Finish our own background saves, then see steps other processes wrote.
    self._manager.wait_until_finished()
    self._manager.reload()
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(
            f"Checkpointer.restore: no checkpoint in {self.directory}; a new "
            "run has latest_step() None, so check it before restoring.")
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(
          f"Checkpointer.restore: no checkpoint for step {step} in "
          f"{self.directory}; saved steps: {steps}.")
    abstract_state = jax.tree.map(_as_abstract, abstract_state)
    leaves, treedef = jax.tree.flatten(abstract_state)
    impls, data_leaves = [], []
    for leaf in leaves:
      if _is_typed_key(leaf):
        impl, data = _key_impl(leaf)
        sharding = _key_data_sharding(getattr(leaf, "sharding", None),
                                      len(leaf.shape), len(data.shape))
        data_leaves.append(jax.ShapeDtypeStruct(data.shape, data.dtype,
                                                sharding=sharding))
        impls.append(impl)
      else:
        data_leaves.append(leaf)
        impls.append(None)
    restored = self._manager.restore(
        int(step),
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(treedef.unflatten(data_leaves)),
            _DATA: ocp.args.JsonRestore(),
        }))
    out_leaves = treedef.flatten_up_to(restored[_STATE])
    out_leaves = [x if impl is None else jax.random.wrap_key_data(x, impl=impl)
                  for x, impl in zip(out_leaves, impls)]
    return treedef.unflatten(out_leaves), restored[_DATA]["data_state"]

  def wait(self) -> None:
    """Blocks until background saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for saves and releases the manager."""
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
