"""Trace-time argument checks whose errors name the argument and the fix.

Array names carry their shape as a suffix (``rewards_BxG``, ``mask_BxGxT``);
:func:`check_named` reads the dimensions from that suffix, so one call checks
rank and the sizes shared with other arguments. All checks run on static
shapes and dtypes only, so they work on tracers and ``jax.ShapeDtypeStruct``
and raise before anything is compiled.
"""

from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def dims_of(name: str) -> tuple[str, ...]:
  """Returns the dimension letters of a shape-suffixed name (``x_BxG`` -> B, G)."""
  suffix = name.rsplit("_", 1)[-1]
  if "_" not in name or not suffix or not all(
      part.isalnum() and part[0].isupper() for part in suffix.split("x")):
    raise ValueError(f"{name!r} has no shape suffix such as '_BxG'.")
  return tuple(suffix.split("x"))


def _fmt(dims: Iterable[str]) -> str:
  return "[" + ", ".join(dims) + "]"


def check_named(name: str, x: Any, sizes: Mapping[str, int] | None = None,
                *, what: str = "") -> dict[str, int]:
  """Checks ``x`` against the shape in ``name``'s suffix and known ``sizes``.

  Args:
    name: the argument's name, e.g. ``"mask_BxG"``.
    x: an array, tracer or ``jax.ShapeDtypeStruct``.
    sizes: sizes already fixed by other arguments, e.g. ``{"B": 4, "G": 8}``.
    what: optional words naming the caller, put in front of the message.

  Returns:
    ``sizes`` extended with the sizes that ``x`` fixes.

  Raises:
    ValueError: wrong rank, or a size that disagrees with ``sizes``.
  """
  dims = dims_of(name)
  sizes = dict(sizes or {})
  shape = tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)
  prefix = f"{what}: " if what else ""
  if len(shape) != len(dims):
    raise ValueError(
        f"{prefix}{name} must have rank {len(dims)} (shape {_fmt(dims)}), got "
        f"shape {shape}.")
  for d, n in zip(dims, shape):
    if d in sizes and sizes[d] != n:
      expected = tuple(sizes.get(e, "?") for e in dims)
      raise ValueError(
          f"{prefix}{name} must have shape {_fmt(dims)} = {expected}, got "
          f"{shape} ({d} is {sizes[d]} from the other inputs).")
    sizes[d] = n
  return sizes


def check_floating(name: str, x: Any, *, what: str = "") -> None:
  """Raises a TypeError unless ``x`` has a floating dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    prefix = f"{what}: " if what else ""
    raise TypeError(
        f"{prefix}{name} must be a floating-point array, got dtype {dtype}; "
        f"cast it first, e.g. {name}.astype(jnp.float32).")


def check_bool(name: str, x: Any, *, what: str = "") -> None:
  """Raises a TypeError unless ``x`` is boolean."""
  dtype = jnp.result_type(x)
  if dtype != jnp.bool_:
    prefix = f"{what}: " if what else ""
    raise TypeError(
        f"{prefix}{name} must be a boolean array, got dtype {dtype}; pass "
        f"{name} != 0 for a 0/1 mask.")


def check_integer(name: str, x: Any, *, what: str = "") -> None:
  """Raises a TypeError unless ``x`` has an integer dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    prefix = f"{what}: " if what else ""
    raise TypeError(
        f"{prefix}{name} must be an integer array, got dtype {dtype}.")


def check_choice(name: str, value: Any, choices: Iterable[Any],
                 *, what: str = "") -> None:
  """Raises a ValueError unless ``value`` is one of ``choices``."""
  choices = tuple(choices)
  if value not in choices:
    prefix = f"{what}: " if what else ""
    raise ValueError(
        f"{prefix}{name} must be one of {choices}, got {value!r}.")


def is_concrete(x: Any) -> bool:
  """True when ``x`` is a Python number or a concrete (non-traced) array."""
  return not isinstance(x, jax.core.Tracer)


def check_nonnegative(name: str, value: Any, *, what: str = "") -> None:
  """Raises a ValueError if a concrete ``value`` is negative (tracers pass)."""
  if is_concrete(value) and np.any(np.asarray(value) < 0):
    prefix = f"{what}: " if what else ""
    raise ValueError(f"{prefix}{name} must be >= 0, got {value!r}.")
