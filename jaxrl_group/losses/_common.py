"""Shared input checks and helpers of the losses."""

from typing import Any

import jax
import jax.numpy as jnp

from jaxrl_group import _checks


def check_tokens(what: str, mask_BxGxT: Any, **arrays: Any
                 ) -> dict[str, int]:
  """Checks per-token inputs against their shape-suffixed names.

  Args:
    what: the loss's name, used in error messages.
    mask_BxGxT: bool mask of valid tokens; fixes B, G and T.
    **arrays: more inputs by name (``logp_BxGxT=...``, ``adv_BxG=...``);
      None values are skipped. Floating dtypes are required.

  Returns:
    The sizes read from the shapes.
  """
  sizes = _checks.check_named("mask_BxGxT", mask_BxGxT, what=what)
  _checks.check_bool("mask_BxGxT", mask_BxGxT, what=what)
  for name, x in arrays.items():
    if x is None:
      continue
    sizes = _checks.check_named(name, x, sizes, what=what)
    _checks.check_floating(name, x, what=what)
  return sizes


def token_adv(adv: jax.Array, mask_BxGxT: jax.Array) -> jax.Array:
  """Broadcasts ``[B, G]`` advantages to ``[B, G, T]``; passes per-token ones."""
  adv = jnp.asarray(adv)
  if adv.ndim == 2:
    adv = jnp.broadcast_to(adv[..., None], mask_BxGxT.shape)
  return adv


def seq_mean(x_BxGxT: jax.Array, mask_BxGxT: jax.Array) -> jax.Array:
  """Mean over each sequence's valid tokens, ``[B, G]`` (0 when empty)."""
  m = mask_BxGxT.astype(x_BxGxT.dtype)
  return jnp.sum(x_BxGxT * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1)
