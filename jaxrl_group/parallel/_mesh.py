"""Device meshes from named axis sizes, one of which may be -1."""

import math
from typing import Any, Sequence

import jax


def _axes_error(axes, n_devices: int, why: str) -> ValueError:
  return ValueError(
      f"make_mesh: axes={tuple(axes)!r} does not fit {n_devices} devices: "
      f"{why}")


def make_mesh(axes: Sequence[tuple[str, int]], *,
              devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """Builds a mesh with named axes over ``devices`` (default: all devices).

  Every axis is ``jax.sharding.AxisType.Auto`` on purpose. The train step is
  ``jax.jit`` with ``in_shardings``/``out_shardings`` on its inputs and
  outputs only, and the compiler (GSPMD propagation) picks the shardings of
  everything in between. With ``Explicit`` axes (the default of
  ``jax.make_mesh``) shardings are part of the array types instead, and an
  op whose operands disagree (e.g. a matmul contracting a sharded dimension)
  raises unless the model code annotates its output sharding; the model code
  carries no such annotations.

  Args:
    axes: ``(name, size)`` pairs in mesh order, e.g. ``(("data", -1),
      ("fsdp", 1), ("tensor", 1))``. One size may be -1: it takes the devices
      the other axes leave.
    devices: the devices to lay out; all of ``jax.devices()`` when None.

  Returns:
    A ``jax.sharding.Mesh`` whose axis sizes multiply to the device count.

  Raises:
    ValueError: no axes, a malformed pair, a duplicate name, two -1 sizes, a
      size below 1 other than -1, or sizes that do not multiply (or, with
      -1, divide) to the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  axes = tuple(axes)
  if not axes:
    raise _axes_error(axes, n, "give at least one (name, size) pair, e.g. "
                      "((\"data\", -1),).")
  names, sizes = [], []
  for pair in axes:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
        or not isinstance(pair[0], str) or isinstance(pair[1], bool)
        or not isinstance(pair[1], int)):
      raise _axes_error(axes, n, f"{pair!r} is not a (str name, int size) "
                        "pair.")
    names.append(pair[0])
    sizes.append(pair[1])
  dups = sorted({a for a in names if names.count(a) > 1})
  if dups:
    raise _axes_error(axes, n, f"axis names {dups} appear more than once; "
                      "give every axis its own name.")
  if sizes.count(-1) > 1:
    raise _axes_error(axes, n, "only one size may be -1 (the remaining "
                      "devices); give the others explicitly.")
  bad = [(a, s) for a, s in zip(names, sizes) if s < 1 and s != -1]
  if bad:
    raise _axes_error(axes, n, f"sizes must be >= 1 or -1, got {bad}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise _axes_error(axes, n, f"the fixed sizes multiply to {known}, "
                        f"which does not divide {n}.")
    sizes[sizes.index(-1)] = n // known
  elif known != n:
    raise _axes_error(axes, n, f"the sizes multiply to {known}; they must "
                      f"multiply to {n} (or set one size to -1).")
  return jax.make_mesh(
      tuple(sizes), tuple(names),
      axis_types=(jax.sharding.AxisType.Auto,) * len(names),
      devices=devices)
