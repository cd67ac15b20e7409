"""KTAE: key-token advantage estimation, per-token advantages ``[B, G, T]``.

See Sun et al., "KTAE: A Model-Free Algorithm to Key-Tokens Advantage
Estimation in Mathematical Reasoning" (arXiv 2505.16826, NeurIPS 2025); the
project's step-level reference, §9 (full definition), and the estimator
reference, §2.7.

Array form: per group, the statistics of a vocabulary id (in how many
correct / incorrect rollouts it appears, how often) are found without a
vocabulary-sized array, by sorting the group's ``G * T`` token ids and
summing over runs of equal ids. The Fisher p-value, the information gain and
the direction term depend only on the 2x2 table, i.e. on ``(a, b)`` given the
group's numbers of correct and incorrect rollouts, so they are computed once
per group on a ``(G + 1) x (G + 1)`` grid and gathered per token.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_group import _checks
from jaxrl_group.advantages import _stats
from jaxrl_group.advantages._base import AdvantageTransform
from jaxrl_group.advantages._base import prepare
from jaxrl_group.advantages._base import require
from jaxrl_group.advantages._base import stateless
from jaxrl_group.advantages._registry import register

_WHAT = "ktae"
_KEYS = ("tokens_BxGxT", "token_mask_BxGxT")


class TokenCounts(NamedTuple):
  """Per-token statistics of the token's id within its group, ``[B, G, T]``.

  Attributes:
    a: correct rollouts of the group in which the id appears.
    b: incorrect rollouts in which it appears.
    count_c: occurrences of the id in the valid tokens of correct rollouts.
    count_w: occurrences in incorrect rollouts.
  """

  a: jax.Array
  b: jax.Array
  count_c: jax.Array
  count_w: jax.Array


def token_counts(tokens_BxGxT: jax.Array, valid_BxGxT: jax.Array,
                 correct_BxG: jax.Array) -> TokenCounts:
  """Presence and occurrence counts of each token's id within its group.

  Only valid tokens count. Values at invalid positions are unspecified
  (mask them).

  Args:
    tokens_BxGxT: integer token ids.
    valid_BxGxT: bool, the tokens that count.
    correct_BxG: bool, the rollout is correct (else incorrect).

  Returns:
    ``TokenCounts`` of int32 ``[B, G, T]`` arrays.
  """
  b_, g, t = tokens_BxGxT.shape
  n = g * t
  last = tokens_BxGxT.ndim - 2  # the flattened G*T axis
  ids = tokens_BxGxT.reshape(b_, n).astype(jnp.int32)
  invalid = (~valid_BxGxT).reshape(b_, n).astype(jnp.int32)
  # zeros_like(ids) + ...: the index arrays take the ids' sharding (sort
  # needs equal shardings on explicit meshes).
  zeros = jnp.zeros_like(ids)
  row = zeros + jnp.repeat(jnp.arange(g, dtype=jnp.int32), t)[None, :]
  pos = zeros + jnp.arange(n, dtype=jnp.int32)[None, :]
  # Sort by (invalid, id, rollout): valid tokens first, equal ids adjacent.
  s_inv, s_ids, s_row, s_pos = jax.lax.sort((invalid, ids, row, pos),
                                            dimension=last, num_keys=3)

  def prev_differs(x):
    return jnp.concatenate(
        [jnp.ones_like(x[:, :1], bool), x[:, 1:] != x[:, :-1]], axis=last)

  new_id = prev_differs(s_ids) | prev_differs(s_inv)
  new_row = new_id | prev_differs(s_row)
  s_valid = s_inv == 0
  s_correct = jnp.take_along_axis(correct_BxG, s_row, axis=last)
  first = s_valid & new_row  # first token of its id in its rollout
  start = jax.lax.cummax(jnp.where(new_id, pos, 0), axis=last)
  is_end = jnp.concatenate(
      [new_id[:, 1:], jnp.ones_like(new_id[:, :1])], axis=last)
  end = jax.lax.cummin(jnp.where(is_end, pos, n - 1), axis=last,
                       reverse=True)

  def run_sum(x):
    x = x.astype(jnp.int32)
    cs = jnp.cumsum(x, axis=last)
    at = lambda i: jnp.take_along_axis(cs, i, axis=last)
    return at(end) - at(start) + jnp.take_along_axis(x, start, axis=last)

  sums = (run_sum(first & s_correct), run_sum(first & ~s_correct),
          run_sum(s_valid & s_correct), run_sum(s_valid & ~s_correct))
  # Back to the original token order.
  _, *out = jax.lax.sort((s_pos,) + sums, dimension=last, num_keys=1)
  return TokenCounts(*(x.reshape(b_, g, t) for x in out))


def table_values(n_c: jax.Array, n_w: jax.Array, g: int, *, dtype,
                 fisher_rtol=1e-7):
  """Fisher score, information gain and direction on the ``(a, b)`` grid.

  For each group (``n_c`` correct and ``n_w`` incorrect rollouts, ``[B]``)
  and each 2x2 table ``[[a, b], [n_c - a, n_w - b]]`` with ``a, b`` in
  ``0..g``: the two-sided Fisher exact p-value (sum of the hypergeometric
  probabilities ``P(k) <= P(a) (1 + tol)`` over the tables with the same
  margins) turned into ``F = exp(-2 p)``, or 0 when every table is counted
  (``p = 1``); the information gain ``IG = H(Y) - H(Y | X)`` in bits; and
  the direction ``h = asin(sqrt(a / n_c)) - asin(sqrt(b / n_w))``. Entries
  with ``a > n_c`` or ``b > n_w`` are 0.

  Returns:
    ``(F, IG, h)``, each ``[B, g + 1, g + 1]`` (indexed ``[:, a, b]``).
  """
  # Relative tolerance on P(k) <= P_obs, so that float rounding of the log
  # factorials cannot split exact ties (float32 needs more than 1e-7).
  floor = 16 * float(jnp.finfo(dtype).eps) * max(1.0, math.lgamma(g + 1))
  log_tol = jnp.log1p(jnp.maximum(jnp.asarray(fisher_rtol, dtype), floor))
  ar = jnp.arange(g + 1)
  a = ar[None, :, None]
  b = ar[None, None, :]
  nc = n_c[:, None, None]
  nw = n_w[:, None, None]
  n = nc + nw
  ok = (a <= nc) & (b <= nw)
  kk = a + b

  def lcomb(top, k):
    good = (k >= 0) & (k <= top)
    lf = lambda x: jax.lax.lgamma(jnp.maximum(x, 0).astype(dtype) + 1)
    v = lf(top) - lf(k) - lf(top - k)
    return jnp.where(good, v, 0), good

  k = ar[None, None, None, :]
  kk4 = kk[..., None]
  lc1, g1 = lcomb(nc[..., None], k)
  lc2, g2 = lcomb(nw[..., None], kk4 - k)
  feasible = g1 & g2 & ok[..., None]
  ln_all, _ = lcomb(n, kk)
  lp = lc1 + lc2 - ln_all[..., None]
  lca, _ = lcomb(nc, a)
  lcb, _ = lcomb(nw, b)
  lp_obs = (lca + lcb - ln_all)[..., None]
  counted = feasible & (lp <= lp_obs + log_tol)
  p = jnp.sum(jnp.where(counted, jnp.exp(jnp.where(counted, lp, 0)), 0),
              axis=-1)
  every = jnp.all(counted == feasible, axis=-1)
  fisher = jnp.where(every, 0, jnp.exp(-2 * jnp.minimum(p, 1)))

  # Information gain of presence X about correctness Y, in bits.
  def h2(x, total):
    q = x / jnp.where(total > 0, total, 1)
    plogp = lambda u: jnp.where(u > 0, u * jnp.log2(jnp.where(u > 0, u, 1)),
                                0)
    return jnp.where(total > 0, -plogp(q) - plogp(1 - q), 0)

  nf = n.astype(dtype)
  kf = kk.astype(dtype)
  safe_n = jnp.where(nf > 0, nf, 1)
  h_y = h2(nc.astype(dtype), nf)
  h_yx = (kf / safe_n) * h2(a.astype(dtype), kf) + (
      (nf - kf) / safe_n) * h2((nc - a).astype(dtype), nf - kf)
  ig = jnp.where(nf > 0, h_y - h_yx, 0)

  p1 = a / (nc.astype(dtype) + 1e-10)
  p2 = b / (nw.astype(dtype) + 1e-10)
  direction = (jnp.arcsin(jnp.sqrt(jnp.clip(p1, 0, 1)))
               - jnp.arcsin(jnp.sqrt(jnp.clip(p2, 0, 1))))
  zero = jnp.zeros((), dtype)
  return tuple(jnp.where(ok, x.astype(dtype), zero)
               for x in (fisher, ig, direction))


# Jitted so that eager calls compile once instead of op by op.
@functools.partial(jax.jit, static_argnames=("dtype",))
def key_token_values(tokens_BxGxT: jax.Array, token_mask_BxGxT: jax.Array,
                     correct_BxG: jax.Array, mask_BxG: jax.Array | None = None,
                     *, dtype=jnp.float32,
                     alpha=1.0, beta_ig=1.0, gamma_tf=1.0, top=1.0,
                     bm25_k1=2.0, bm25_b=0.5, pad_id: int | None = None,
                     fisher_rtol=1e-7) -> jax.Array:
  """KTAE's key value of each token's id within its group, ``[B, G, T]``.

  ``key = top * (2 sigmoid(((alpha F + beta_ig IG) h) / (alpha + beta_ig))
  - 1)``, in ``(-top, top)``; ``h`` is the direction term plus, when
  ``gamma_tf != 0``, the BM25-style frequency term ``tf_c / (tf_w + 1e-5) -
  tf_w / (tf_c + 1e-5)``. Groups without both a correct and an incorrect
  valid rollout, invalid tokens and ``pad_id`` get 0. See ``ktae``.

  Args:
    tokens_BxGxT: integer token ids.
    token_mask_BxGxT: bool, the valid tokens.
    correct_BxG: bool, correct rollouts (the others are incorrect).
    mask_BxG: bool, valid rollouts (None: all). A valid rollout without a
      valid token still counts in ``n_c`` or ``n_w`` (it contains no id).
    dtype: the floating dtype of the result.
    alpha, beta_ig, gamma_tf, top, bm25_k1, bm25_b, pad_id, fisher_rtol:
      see ``ktae``.

  Returns:
    ``[B, G, T]`` key values, 0 at invalid tokens.
  """
  g = tokens_BxGxT.shape[-2]
  if mask_BxG is None:
    mask_BxG = jnp.ones_like(correct_BxG, bool)
  valid_BxGxT = token_mask_BxGxT & mask_BxG[..., None]
  correct = correct_BxG & mask_BxG
  wrong = ~correct_BxG & mask_BxG
  n_c = jnp.sum(correct, axis=-1, dtype=jnp.int32)
  n_w = jnp.sum(wrong, axis=-1, dtype=jnp.int32)
  counts = token_counts(tokens_BxGxT, valid_BxGxT, correct)
  fisher, ig, direction = table_values(n_c, n_w, g, dtype=dtype,
                                       fisher_rtol=fisher_rtol)
  b_ = tokens_BxGxT.shape[0]
  width = (g + 1) * (g + 1)
  a_c = jnp.clip(counts.a, 0, g)
  b_c = jnp.clip(counts.b, 0, g)
  flat_idx = (a_c * (g + 1) + b_c).reshape(b_, -1)

  def gather(table):
    out = jnp.take_along_axis(table.reshape(b_, width), flat_idx,
                              axis=flat_idx.ndim - 1)
    return out.reshape(tokens_BxGxT.shape)

  alpha = jnp.asarray(alpha, dtype)
  beta_ig = jnp.asarray(beta_ig, dtype)
  strength = alpha * gather(fisher) + beta_ig * gather(ig)
  h = gather(direction)
  # BM25-style term frequency of the id among correct / incorrect tokens.
  valid = valid_BxGxT
  n_tok_c = jnp.sum(valid & correct[..., None], axis=(-2, -1),
                    dtype=dtype)[:, None, None]
  n_tok_w = jnp.sum(valid & wrong[..., None], axis=(-2, -1),
                    dtype=dtype)[:, None, None]
  avg = (n_tok_c + n_tok_w) / 2
  safe = lambda x: jnp.where(x > 0, x, 1)

  def bm25(count, total):
    f = jnp.where(total > 0, count.astype(dtype) / safe(total), 0)
    k = bm25_k1 * (1 - bm25_b + bm25_b * jnp.where(avg > 0,
                                                   total / safe(avg), 0))
    den = f + k
    return jnp.where(den > 0, f * (bm25_k1 + 1) / safe(den), 0)

  tf_c = bm25(counts.count_c, n_tok_c)
  tf_w = bm25(counts.count_w, n_tok_w)
  tf_term = tf_c / (tf_w + 1e-5) - tf_w / (tf_c + 1e-5)
  h = h + jnp.where(jnp.asarray(gamma_tf) != 0, tf_term, 0)
  denom = alpha + beta_ig
  raw = strength * h / jnp.where(denom != 0, denom, 1)
  key = jnp.asarray(top, dtype) * jnp.tanh(raw / 2)  # (sigmoid - 0.5) * 2
  keep = valid & ((n_c > 0) & (n_w > 0))[:, None, None] & (denom != 0)
  if pad_id is not None:
    keep = keep & (tokens_BxGxT != pad_id)
  return jnp.where(keep, key, 0).astype(dtype)


# One jitted function for every ktae transform: eager calls compile once per
# shape and static configuration; numeric hyperparameters are traced (so
# inject_hyperparams works without recompiling).
@functools.partial(jax.jit, static_argnames=("norm_by_std", "std",
                                              "eps_placement", "singleton"))
def _ktae_advantages(r, mask, tokens, token_mask, *, hp, norm_by_std, std,
                     eps_placement, singleton):
  hp = dict(hp)
  thr = hp.pop("success_threshold")
  eps = hp.pop("eps")
  valid = token_mask & mask[..., None]
  key = key_token_values(tokens, token_mask, r > thr, mask, dtype=r.dtype,
                         **hp)
  adv, st = _stats.group_zscore(r, mask, std=std, singleton=singleton,
                                norm_by_std=norm_by_std, eps=eps,
                                eps_placement=eps_placement)
  out = jnp.where(valid, adv[..., None] + key, 0)
  return _stats.finish(out, mask, st, singleton, r.dtype)


@register(_WHAT, min_group_size=2, requires=_KEYS, token_level=True)
def ktae(*, alpha: float = 1.0, beta_ig: float = 1.0, gamma_tf: float = 1.0,
         top: float = 1.0, success_threshold: float = 0.0,
         pad_id: int | None = None, bm25_k1: float = 2.0,
         bm25_b: float = 0.5, fisher_rtol: float = 1e-7,
         norm_by_std: bool = True, std: str = "unbiased", eps: float = 1e-6,
         eps_placement: str = "std",
         singleton: str = "zero") -> AdvantageTransform:
  """KTAE: GRPO advantage plus a signed per-token "key-token" value.

  See Sun et al., "KTAE: A Model-Free Algorithm to Key-Tokens Advantage
  Estimation in Mathematical Reasoning" (arXiv 2505.16826); authors' code
  ``xiaoxuanNLP/KTAE`` (``compute_ktae_outcome_advantage_and_keytokens``).
  Per group, rollouts are correct iff ``r > success_threshold``. Only a
  group with at least one correct and one incorrect valid rollout gets key
  values; for each vocabulary id v it builds the 2x2 table ``a`` = correct
  rollouts containing v, ``b`` = incorrect ones, ``c = n_c - a``, ``d = n_w
  - b``, and computes

  * ``F = exp(-2 p)`` from the two-sided Fisher exact p-value (0 if p = 1);
  * ``IG = H(Y) - H(Y | X)`` in bits (Y correctness, X presence);
  * ``h = asin(sqrt(a / n_c)) - asin(sqrt(b / n_w))`` (1e-10 in both
    denominators), plus, if ``gamma_tf != 0``, the BM25 term ``tf_c / (tf_w
    + 1e-5) - tf_w / (tf_c + 1e-5)`` with ``tf = f (k1 + 1) / (f + k1 (1 -
    b + b N / avg))``, ``f`` the id's relative frequency among the correct
    (incorrect) tokens, ``N`` their total and ``avg = (N_c + N_w) / 2``;
  * ``key(v) = top * (2 sigmoid(((alpha F + beta_ig IG) h) / (alpha +
    beta_ig)) - 1)``.

  Then ``A[i, t] = m[i, t] ((r_i - mean_g) / (std_g + 1e-6) + key(y[i,
  t]))``, std unbiased (verl).

  Conventions (differences from upstream, which is a per-group Python
  loop): only tokens valid under ``token_mask_BxGxT`` and ``mask_BxG`` enter
  the statistics (upstream: the token mask); ``gamma_tf`` gates the BM25
  term as upstream (its value is not a weight); a sample with an empty
  group statistic (for example no correct tokens at all) gets a 0 frequency
  term where upstream divides by 0; upstream compares ``P(k) <= P_obs``
  and ``p != 1`` in float32, here the comparison has the relative tolerance
  ``max(fisher_rtol, 16 eps_dtype log(G!))`` and ``p = 1`` means every table
  was counted, so exact ties are never split by rounding; upstream forces
  the Qwen pad id 151643 to 0, here ``pad_id`` (default None: no id
  excluded; pass 151643 for Qwen to reproduce it). A group with one valid
  sample gets key 0 and, under ``singleton="zero"``, advantage 0 (upstream,
  ``"raw"``: mean 0, std 1, so ``r / (1 + eps)``).

  Args:
    alpha: weight of the Fisher score (upstream 1.0).
    beta_ig: weight of the information gain (1.0). ``alpha + beta_ig`` must
      not be 0.
    gamma_tf: a non-zero value adds the BM25 frequency term (1.0).
    top: the key values lie in ``(-top, top)`` (1.0).
    success_threshold: a rollout is correct iff ``r > success_threshold``
      (upstream: ``r > 0``).
    pad_id: a token id whose key is forced to 0 (upstream: 151643).
    bm25_k1: BM25 ``k1`` (2.0).
    bm25_b: BM25 ``b`` (0.5).
    fisher_rtol: relative tolerance of the Fisher test's ``P(k) <= P_obs``
      (scipy's 1e-7; raised automatically for float32, see above).
    norm_by_std: divide the GRPO part by the group std.
    std: ``"unbiased"`` (verl) or ``"population"``.
    eps: added to the std (verl: 1e-6), or to the variance.
    eps_placement: ``"std"`` or ``"var"``.
    singleton: a one-sample group gives ``"zero"`` or its ``"raw"`` reward
      (verl).

  Returns:
    A stateless ``AdvantageTransform`` returning ``[B, G, T]``; needs
    ``tokens_BxGxT`` (integer ids) and ``token_mask_BxGxT`` in ctx.
  """
  _stats.check_conventions(_WHAT, std=std, eps=eps,
                           eps_placement=eps_placement, singleton=singleton)
  _checks.check_nonnegative("fisher_rtol", fisher_rtol, what=_WHAT)
  if (_checks.is_concrete(alpha) and _checks.is_concrete(beta_ig)
      and float(alpha) + float(beta_ig) == 0):
    raise ValueError(f"{_WHAT}: alpha + beta_ig must not be 0, got "
                     f"alpha={alpha!r}, beta_ig={beta_ig!r}.")

  hp = dict(alpha=alpha, beta_ig=beta_ig, gamma_tf=gamma_tf, top=top,
            success_threshold=success_threshold, pad_id=pad_id,
            bm25_k1=bm25_k1, bm25_b=bm25_b, fisher_rtol=fisher_rtol, eps=eps)

  def update_fn(rewards_BxG, *, mask_BxG=None, **ctx):
    r, mask, sizes = prepare(_WHAT, rewards_BxG, mask_BxG, min_group_size=2)
    tokens = require(_WHAT, ctx, "tokens_BxGxT", sizes)
    _checks.check_integer("tokens_BxGxT", tokens, what=_WHAT)
    token_mask = require(_WHAT, ctx, "token_mask_BxGxT", sizes)
    _checks.check_bool("token_mask_BxGxT", token_mask, what=_WHAT)
    return _ktae_advantages(
        r, mask, tokens, token_mask, hp=hp, norm_by_std=norm_by_std,
        std=std, eps_placement=eps_placement, singleton=singleton)

  return stateless(update_fn)
