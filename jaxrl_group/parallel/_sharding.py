"""Logical axis names to mesh shardings: rules, specs and whole trees.

Model parameters name their dimensions with logical axes (``"embed"``,
``"heads"``, ...); a rules mapping says which mesh axes each logical axis is
split over. Keeping the two apart lets one model run data parallel, FSDP or
tensor parallel by changing the mesh and the rules, not the model.
"""

import math
import types
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

# Mesh axes that split the leading batch dimension, outermost first.
BATCH_AXES = ("data", "fsdp")

# Logical axis names used by the model.
LOGICAL_AXES = ("batch", "vocab", "embed", "heads", "kv_heads", "head_dim",
                "mlp", "layers")

# Logical axis -> mesh axis (a name, a tuple of names, or None: replicated).
# FSDP shards the embedding dimension of every weight; tensor parallelism
# splits heads, the MLP hidden dimension and the vocabulary; the stacked
# layer dimension and the head dimension stay whole. Read-only: extend a
# copy, e.g. ``{**DEFAULT_RULES, "embed": None}``.
DEFAULT_RULES: Mapping[str, str | tuple[str, ...] | None] = (
    types.MappingProxyType({
        "batch": BATCH_AXES,
        "vocab": "tensor",
        "embed": "fsdp",
        "heads": "tensor",
        "kv_heads": "tensor",
        "head_dim": None,
        "mlp": "tensor",
        "layers": None,
    }))

Rules = Mapping[str, str | Sequence[str] | None]


def _rule_axes(name: str, rules: Rules, names) -> tuple[str, ...]:
  """The mesh axes that the rules give the logical axis ``name``."""
  if name not in rules:
    raise ValueError(
        f"logical axis {name!r} in names={tuple(names)!r} has no entry in "
        f"rules (known: {sorted(rules)}); add it to rules, mapped to None "
        "to replicate it.")
  target = rules[name]
  if target is None:
    return ()
  if isinstance(target, str):
    return (target,)
  target = tuple(target)
  if not all(isinstance(a, str) for a in target):
    raise ValueError(
        f"rules[{name!r}] must be a mesh axis name, a tuple of names or "
        f"None, got {rules[name]!r}.")
  return target


def logical_to_spec(names: Sequence[str | None], rules: Rules = DEFAULT_RULES,
                    mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
  """The ``PartitionSpec`` of an array whose dimensions have logical names.

  With a ``mesh``, mesh axes the mesh lacks or of size 1 are dropped, so the
  same rules serve every mesh. A mesh axis already used by an earlier
  dimension is dropped from later ones (a spec may use an axis once). With
  a ``shape``, a dimension keeps the longest leading part of its mesh axes
  whose sizes multiply to a divisor of the dimension, and is replicated when
  no part does: e.g. a batch of 4 on a ``data=4, fsdp=2`` mesh is split over
  ``"data"`` only, and 14 heads on ``tensor=4`` are replicated. (The
  divisibility fallback needs the mesh for the axis sizes.)

  Args:
    names: one logical axis name (or None: replicated) per dimension.
    rules: logical name -> mesh axis name, tuple of names, or None.
    mesh: when given, drops absent and size-1 mesh axes, and sizes the
      divisibility check.
    shape: the array's shape, to replicate dimensions that do not divide.

  Returns:
    A ``PartitionSpec`` with one entry per dimension: None, one mesh axis
    name, or a tuple of names.

  Raises:
    ValueError: a name without a rule, a malformed rule, or a ``shape`` whose
      rank differs from ``len(names)``.
  """
  if isinstance(names, str) or not isinstance(names, (tuple, list)):
    raise ValueError(
        f"names must be a tuple of logical axis names (or None) per "
        f"dimension, got {names!r}; write ({names!r},) for one dimension.")
  if shape is not None and len(shape) != len(names):
    raise ValueError(
        f"names={tuple(names)!r} has {len(names)} entries but shape "
        f"{tuple(shape)} has rank {len(shape)}; give one name per dimension.")
  used = set()
  entries = []
  for d, name in enumerate(names):
    if name is None:
      entries.append(None)
      continue
    if not isinstance(name, str):
      raise ValueError(
          f"names[{d}] must be a str or None, got {name!r} in "
          f"names={tuple(names)!r}.")
    axes = [a for a in _rule_axes(name, rules, names) if a not in used]
    if mesh is not None:
      axes = [a for a in axes if mesh.shape.get(a, 1) > 1]
      if shape is not None:
        # Longest leading part of the axes whose product divides the size.
        while axes and shape[d] % math.prod(mesh.shape[a] for a in axes):
          axes.pop()
    used.update(axes)
    if not axes:
      entries.append(None)
    elif len(axes) == 1:
      entries.append(axes[0])
    else:
      entries.append(tuple(axes))
  return PartitionSpec(*entries)


def tree_shardings(abstract_tree: Any, names_tree: Any, mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> Any:
  """A ``NamedSharding`` for every array leaf of ``abstract_tree``.

  ``names_tree`` mirrors ``abstract_tree`` down to its arrays and holds,
  where ``abstract_tree`` has an array, the tuple of logical names of that
  array's dimensions, or None for a replicated array. The structure is read
  from ``abstract_tree`` (``flatten_up_to``), so containers that are
  themselves tuples (NamedTuple optimiser states, ``()``) are never mistaken
  for a names tuple, and empty containers need no names. ``names_tree=None``
  replicates everything.

  Args:
    abstract_tree: arrays or ``jax.ShapeDtypeStruct`` (anything with
      ``.shape``), e.g. from ``jax.eval_shape``.
    names_tree: as described above, or None.
    mesh: the mesh to shard over.
    rules: logical name -> mesh axes, as in :func:`logical_to_spec`. Each
      dimension that does not divide its mesh axes is replicated.

  Returns:
    The structure of ``abstract_tree`` with a ``NamedSharding`` per leaf.

  Raises:
    ValueError: a structure mismatch, or bad names (the message gives the
      leaf's path).
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_tree)
  if names_tree is None:
    names_leaves = [None] * len(leaves)
  else:
    try:
      names_leaves = treedef.flatten_up_to(names_tree)
    except (ValueError, TypeError) as e:
      raise ValueError(
          "names_tree must have the structure of abstract_tree, with a tuple "
          "of logical axis names (or None) where abstract_tree has an array; "
          f"they differ: {e}") from e
  shardings = []
  for (path, leaf), names in zip(leaves, names_leaves):
    if names is None:
      shardings.append(NamedSharding(mesh, PartitionSpec()))
      continue
    try:
      spec = logical_to_spec(names, rules, mesh, tuple(np.shape(leaf)))
    except ValueError as e:
      raise ValueError(
          f"names_tree at {jax.tree_util.keystr(path)}: {e}") from e
    shardings.append(NamedSharding(mesh, spec))
  return treedef.unflatten(shardings)


def with_shardings(abstract_tree: Any, shardings_tree: Any) -> Any:
  """``jax.ShapeDtypeStruct`` leaves carrying the matching shardings.

  Args:
    abstract_tree: arrays or ``jax.ShapeDtypeStruct`` leaves.
    shardings_tree: the same structure with a ``jax.sharding.Sharding`` per
      leaf, e.g. from :func:`tree_shardings`.

  Returns:
    ``abstract_tree`` with ``ShapeDtypeStruct(shape, dtype, sharding=s)``
    leaves, the form a checkpoint restore takes to place its arrays.
  """
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_tree, shardings_tree)


def batch_sharding(mesh: Mesh, ndim: int, *,
                   batch_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
  """Dimension 0 split over the batch axes the mesh has, the rest whole.

  Args:
    mesh: the mesh.
    ndim: rank of the batch arrays (>= 1).
    batch_axes: mesh axes to split the batch over, outermost first; those
      absent from the mesh or of size 1 are left out.

  Returns:
    ``NamedSharding(mesh, P(batch_axes, None, ...))`` with ``ndim`` entries.
  """
  if isinstance(ndim, bool) or not isinstance(ndim, int) or ndim < 1:
    raise ValueError(
        f"batch_sharding: ndim must be an int >= 1 (the batch arrays' rank), "
        f"got {ndim!r}.")
  axes = tuple(a for a in batch_axes if mesh.shape.get(a, 1) > 1)
  first = None if not axes else axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, PartitionSpec(first, *(None,) * (ndim - 1)))


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy of the array on every device."""
  return NamedSharding(mesh, PartitionSpec())
