"""Composing transforms: ``chain`` (tuple state) and ``named_chain`` (dict)."""

from typing import Any

from jaxrl_group.advantages._base import AdvantageTransform


def _check_transform(i, tx):
  if not isinstance(tx, AdvantageTransform):
    raise TypeError(
        f"chain: argument {i} must be an AdvantageTransform, got "
        f"{type(tx).__name__}; build one with a factory, e.g. grpo().")


def chain(*transforms: AdvantageTransform) -> AdvantageTransform:
  """Applies transforms in order; the first sees rewards, the rest advantages.

  ``mask_BxG`` and every ``ctx`` input reach every transform (each ignores
  the keys it does not use).

  Args:
    *transforms: the transforms, applied left to right.

  Returns:
    An ``AdvantageTransform`` whose state is the tuple of the inner states.
  """
  for i, tx in enumerate(transforms):
    _check_transform(i, tx)

  def init_fn(rewards_BxG):
    return tuple(tx.init(rewards_BxG) for tx in transforms)

  def update_fn(values, state, *, mask_BxG=None, **ctx):
    if len(state) != len(transforms):
      raise ValueError(f"chain: state has {len(state)} entries for "
                       f"{len(transforms)} transforms.")
    new_state = []
    for tx, s in zip(transforms, state):
      values, s = tx.update(values, s, mask_BxG=mask_BxG, **ctx)
      new_state.append(s)
    return values, tuple(new_state)

  return AdvantageTransform(init_fn, update_fn)


def named_chain(*named: tuple[str, AdvantageTransform]) -> AdvantageTransform:
  """Like ``chain``, with a dict state keyed by the given names.

  Example::

    tx = named_chain(("center", center()), ("scale", scale()))
    state = tx.init(rewards_BxG)          # {"center": ..., "scale": ...}

  Args:
    *named: ``(name, transform)`` pairs; names must be unique strings.

  Returns:
    An ``AdvantageTransform`` whose state is ``{name: inner_state}``.
  """
  names = []
  for i, pair in enumerate(named):
    if not (isinstance(pair, tuple) and len(pair) == 2
            and isinstance(pair[0], str)):
      raise TypeError(f"named_chain: argument {i} must be a (name, transform)"
                      f" pair, got {pair!r}.")
    _check_transform(i, pair[1])
    if pair[0] in names:
      raise ValueError(f"named_chain: duplicate name {pair[0]!r}; names must "
                       "be unique.")
    names.append(pair[0])

  def init_fn(rewards_BxG) -> dict[str, Any]:
    return {name: tx.init(rewards_BxG) for name, tx in named}

  def update_fn(values, state, *, mask_BxG=None, **ctx):
    if set(state) != set(names):
      raise ValueError(f"named_chain: state keys {sorted(state)} do not match"
                       f" the transform names {names}.")
    new_state = {}
    for name, tx in named:
      values, new_state[name] = tx.update(values, state[name],
                                          mask_BxG=mask_BxG, **ctx)
    return values, new_state

  return AdvantageTransform(init_fn, update_fn)
