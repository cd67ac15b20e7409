"""Builds valid inputs for any registered estimator from its ``EstimatorInfo``.

Context inputs are made from their shape-suffixed names, so an estimator
registered later gets the registry-wide invariant tests without new code here,
unless its context needs special values (then add a maker below).
"""

import numpy as np

from jaxrl_group import _checks
from jaxrl_group import advantages as A

B, G, T, K = 8, 4, 6, 3


def token_mask(rng, b=B, g=G, t=T):
  """Ragged prefix masks, including empty and full rows."""
  lengths = rng.integers(0, t + 1, size=(b, g))
  lengths[0, 0], lengths[0, -1] = 0, t
  return np.arange(t)[None, None, :] < lengths[..., None]


def _special(key, rng, sizes, tm):
  if key == "token_mask_BxGxT":
    return tm
  if key == "lengths_BxG":
    return tm.sum(-1).astype(np.float32)
  if key == "old_logp_BxGxT":
    return np.log(rng.uniform(0.05, 1.0, (sizes["B"], sizes["G"], T))
                  ).astype(np.float32)
  if key == "step":
    return np.int32(3)
  if key == "tokens_BxGxT":  # ktae: token ids, small so that some repeat
    return rng.integers(0, 5, (sizes["B"], sizes["G"], T)).astype(np.int32)
  if key == "subgroup_ids_BxG":  # group_robust: ids in [0, num_groups = 2)
    return rng.integers(0, 2, (sizes["B"], sizes["G"])).astype(np.int32)
  return None


def make_ctx(name, rng, b=B, g=G):
  """Context inputs for ``A.INFO[name].requires``."""
  sizes = {"B": b, "G": g, "T": T, "K": K}
  tm = token_mask(rng, b, g)
  ctx = {}
  for key in A.INFO[name].requires:
    x = _special(key, rng, sizes, tm)
    if x is None:
      shape = tuple(sizes[d] for d in _checks.dims_of(key))
      if "mask" in key:
        x = rng.random(shape) < 0.8
      elif "ids" in key:  # small ids, so that some repeat
        x = rng.integers(0, 3, size=shape).astype(np.int32)
      else:
        x = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    ctx[key] = x
  return ctx


def make_rewards(name, rng, b=B, g=G, dtype=np.float32):
  """Rewards of the estimator's input layout (``[B, G]`` or ``[B, G, K]``)."""
  dims = _checks.dims_of(A.INFO[name].input_name)
  shape = tuple({"B": b, "G": g, "K": K}[d] for d in dims)
  return rng.normal(size=shape).astype(dtype)


def edge_case_batch(name, rng, b=B, g=G):
  """Rewards and mask with an all-equal, a singleton and a masked-out group."""
  r = make_rewards(name, rng, b, g)
  r[0] = 1.0  # all equal
  r[3] = np.round(r[3])  # ties
  mask = np.ones((b, g), bool)
  mask[1, 1:] = False  # singleton
  mask[2, :] = False  # fully masked
  mask[4, -1] = False  # padded row
  if g > 2:
    mask[5, 2:] = False  # group of two
  return r, mask


def output_shape(name, b=B, g=G):
  return (b, g, T) if A.INFO[name].token_level else (b, g)


def expand(mask_BxG, out):
  return mask_BxG.reshape(mask_BxG.shape + (1,) * (out.ndim - 2))
