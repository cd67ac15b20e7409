"""Loss aggregation as deferred ``(total, weight)`` pairs.

A loss over a batch is ``total / weight``. Aggregating returns the pair
instead of the quotient, so that micro-batches (gradient accumulation) and
devices can add their totals and weights first and divide once: the value and
the gradient are then exactly those of the full batch, whatever the split.
(verl's per-micro-batch normalisers made ``seq-mean-token-sum-norm`` scale
with the micro-batch size, verl-project/verl#3741; see the loss reference §9.2.)

The weight never depends on the parameters, so the gradient of the full-batch
loss is ``sum_k grad(total_k) / sum_k weight_k``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                "seq_mean_token_sum_norm")


class Deferred(NamedTuple):
  """A loss or metric as a sum and the weight it will be divided by."""

  total: jax.Array  # shape=(); the numerator, differentiable
  weight: jax.Array  # shape=(); the denominator, no gradient

  @property
  def value(self) -> jax.Array:
    """``total / weight`` (0 when the weight is 0)."""
    return self.total / jnp.where(self.weight > 0, self.weight, 1)


def combine(*parts: Deferred) -> Deferred:
  """Sums the totals and the weights of parts of one batch."""
  return Deferred(sum(p.total for p in parts), sum(p.weight for p in parts))


def aggregate(loss_BxGxT: jax.Array, mask_BxGxT: jax.Array, mode: str, *,
              norm_constant: float | None = None) -> Deferred:
  """Reduces a per-token loss to a deferred pair under ``mode``.

  Modes (L = loss, M = mask; i runs over sequences, t over tokens):

  * ``token_mean``: ``sum L M / sum M``: every token of the whole batch
    weighs the same (DAPO, arXiv 2503.14476; verl ``token-mean`` with the
    global token count; TRL ``dapo``). Because the pair is deferred, this is
    the global token mean however the batch is split; TRL's ``bnpo`` (a
    per-micro-batch token mean) is deliberately not offered.
  * ``seq_mean_token_mean``: ``sum_i (sum_t L M / sum_t M) / N_seq``: the
    GRPO paper's form (arXiv 2402.03300); verl ``seq-mean-token-mean``.
  * ``seq_mean_token_sum``: ``sum_i sum_t L M / N_seq``.
  * ``seq_mean_token_sum_norm``: ``sum_i sum_t L M / (N_seq * C)`` with a
    constant C (``norm_constant``, e.g. the maximum completion length):
    Dr.GRPO (arXiv 2503.20783), TRL ``dr_grpo``. (verl's form divides by C
    only; dividing by N_seq too keeps the value independent of the batch
    size, and the gradient direction is the same.)

  N_seq counts the sequences with at least one valid token.

  Args:
    loss_BxGxT: per-token loss, any leading shape ``[..., T]``.
    mask_BxGxT: bool, valid tokens, same shape.
    mode: one of ``AGGREGATIONS``.
    norm_constant: C for ``seq_mean_token_sum_norm`` (required there).

  Returns:
    ``Deferred(total, weight)``.
  """
  _checks.check_choice("mode", mode, AGGREGATIONS, what="aggregate")
  if jnp.shape(loss_BxGxT) != jnp.shape(mask_BxGxT):
    raise ValueError(f"aggregate: mask_BxGxT must have the shape of "
                     f"loss_BxGxT {jnp.shape(loss_BxGxT)}, got "
                     f"{jnp.shape(mask_BxGxT)}.")
  _checks.check_bool("mask_BxGxT", mask_BxGxT, what="aggregate")
  if mode == "seq_mean_token_sum_norm" and norm_constant is None:
    raise ValueError("aggregate: mode 'seq_mean_token_sum_norm' needs "
                     "norm_constant (Dr.GRPO's C, e.g. the maximum completion "
                     "length).")
  dtype = jnp.result_type(loss_BxGxT)
  m = mask_BxGxT.astype(dtype)
  masked = jnp.where(mask_BxGxT, loss_BxGxT, 0)
  tokens = jnp.sum(m, axis=-1)
  n_seq = jnp.sum(tokens > 0, dtype=dtype)
  if mode == "token_mean":
    return Deferred(jnp.sum(masked), jnp.sum(m))
  if mode == "seq_mean_token_mean":
    per_seq = jnp.sum(masked, axis=-1) / jnp.maximum(tokens, 1)
    return Deferred(jnp.sum(per_seq), n_seq)
  if mode == "seq_mean_token_sum":
    return Deferred(jnp.sum(masked), n_seq)
  return Deferred(jnp.sum(masked), n_seq * norm_constant)


def token_mean(x: jax.Array, mask: jax.Array) -> Deferred:
  """The deferred mean of ``x`` over ``mask`` (for metrics)."""
  m = mask.astype(jnp.result_type(x))
  return Deferred(jnp.sum(jnp.where(mask, x, 0)), jnp.sum(m))
