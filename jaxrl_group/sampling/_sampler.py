"""A jittable, group-aware sampler: G completions per prompt from one prefill.

Each prompt is run through the model once; its keys and values
(:class:`~jaxrl_group.models.PromptCache`) are shared by its G samples, which
attend to them in place (never copied G times). Decoding is a
``lax.while_loop`` that stops a row at its first EOS and leaves the loop when
every row is done. Temperature, top-p and top-k are traced values, so
changing them (or the key) never recompiles. The returned log-probabilities
are the two a loss needs: under the distribution each token was drawn from,
and under the model's unmodified (temperature 1) distribution.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import _checks
from jaxrl_group import models
from jaxrl_group.models import ModelConfig


class Rollout(NamedTuple):
  """G sampled completions of each of B prompts, T = ``max_new_tokens`` slots."""
  tokens_BxGxT: jax.Array      # int32; ``pad_id`` after a completion ends.
  logp_BxGxT: jax.Array        # float32 log-prob under the sampling distribution.
  logp_raw_BxGxT: jax.Array    # float32 log-prob under softmax(logits), tau = 1.
  mask_BxGxT: jax.Array        # bool; True on generated tokens, EOS included.
  lengths_BxG: jax.Array       # int32 number of generated tokens.
  truncated_BxG: jax.Array     # bool; no EOS within ``max_new_tokens``.


def filter_logits(logits_NxV: jax.Array, temperature: jax.Array,
                  top_p: jax.Array, top_k: jax.Array) -> jax.Array:
  """Temperature, then top-k, then top-p (nucleus) filtering, with traced knobs.

  Filtered entries become ``-inf``. Top-k keeps the k largest (``top_k <= 0``
  keeps all); top-p then keeps the smallest set of the remaining tokens, in
  descending order, whose probability reaches ``top_p`` (the first token is
  always kept). Ties at the threshold are all kept. The sort only runs when
  a filter is active (``lax.cond``), so plain sampling pays nothing for it.

  Args:
    logits_NxV: ``[..., V]`` float logits.
    temperature: scalar > 0.
    top_p: scalar in (0, 1].
    top_k: integer scalar; ``<= 0`` disables it.

  Returns:
    ``[..., V]`` float32 logits of the sampling distribution.
  """
  z = logits_NxV.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
  v = z.shape[-1]
  top_p = jnp.asarray(top_p, jnp.float32)
  top_k = jnp.asarray(top_k, jnp.int32)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)

  def apply(z):
    sorted_z = -jnp.sort(-z, axis=-1)
    ranks = jnp.arange(v, dtype=jnp.int32).reshape((1,) * (z.ndim - 1)
                                                    + (v,))
    sorted_z = jnp.where(ranks < k, sorted_z, -jnp.inf)
    probs = jax.nn.softmax(sorted_z, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep = (before < top_p) & (ranks < k)
    n_keep = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)
    thresh = jnp.take_along_axis(sorted_z, n_keep - 1, axis=-1)
    return jnp.where(z >= thresh, z, -jnp.inf)

  return jax.lax.cond((top_p < 1.0) | (k < v), apply, lambda z: z, z)


def _token_logp(logits, tokens):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def _check_inputs(cfg, prompts_BxP, prompt_lengths_B, group_size,
                  max_new_tokens, eos_ids, temperature, top_p, top_k, greedy):
  what = "sample"
  sizes = _checks.check_named("prompts_BxP", prompts_BxP, what=what)
  _checks.check_named("prompt_lengths_B", prompt_lengths_B, sizes, what=what)
  if not jnp.issubdtype(jnp.result_type(prompts_BxP), jnp.integer):
    raise TypeError(f"{what}: prompts_BxP must hold integer token ids, got "
                    f"{jnp.result_type(prompts_BxP)}.")
  for name, n in (("group_size", group_size),
                  ("max_new_tokens", max_new_tokens)):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
      raise ValueError(f"{what}: {name} must be a positive int, got {n!r}.")
  p = prompts_BxP.shape[1]
  if p + max_new_tokens > cfg.max_seq_len:
    raise ValueError(
        f"{what}: prompt width P={p} plus max_new_tokens={max_new_tokens} "
        f"exceeds the model's max_seq_len={cfg.max_seq_len}; shorten the "
        f"prompts or lower max_new_tokens.")
  if not eos_ids:
    raise ValueError(f"{what}: eos_ids must name at least one token id.")
  for e in eos_ids:
    if not 0 <= int(e) < cfg.vocab_size:
      raise ValueError(f"{what}: eos id {e} is outside [0, vocab_size="
                       f"{cfg.vocab_size}).")
  if _checks.is_concrete(prompt_lengths_B):
    lengths = np.asarray(prompt_lengths_B)
    if lengths.size and (lengths.min() < 1 or lengths.max() > p):
      raise ValueError(f"{what}: prompt_lengths_B must lie in [1, P={p}], "
                       f"got min {lengths.min()}, max {lengths.max()}.")
  if not greedy and _checks.is_concrete(temperature) and np.any(
      np.asarray(temperature) <= 0):
    raise ValueError(f"{what}: temperature must be > 0 (got {temperature}); "
                     f"use greedy=True for argmax decoding.")
  if _checks.is_concrete(top_p) and np.any(
      (np.asarray(top_p) <= 0) | (np.asarray(top_p) > 1)):
    raise ValueError(f"{what}: top_p must lie in (0, 1], got {top_p}.")
  if _checks.is_concrete(top_k) and not jnp.issubdtype(
      jnp.result_type(top_k), jnp.integer):
    raise TypeError(f"{what}: top_k must be an integer (0 disables it), got "
                    f"{top_k!r}.")


def sample(params: models.Params, cfg: ModelConfig, prompts_BxP: jax.Array,
           prompt_lengths_B: jax.Array, key: jax.Array, *, group_size: int,
           max_new_tokens: int, eos_ids: Sequence[int],
           temperature: float | jax.Array = 1.0,
           top_p: float | jax.Array = 1.0, top_k: int | jax.Array = 0,
           greedy: bool = False, pad_id: int = 0,
           share_prefill: bool = True, stop_early: bool = True) -> Rollout:
  """Samples ``group_size`` completions of every prompt.

  Jit it with the keyword-only arguments before ``temperature`` static (or
  use :func:`make_sampler`); ``temperature``, ``top_p``, ``top_k`` and the key
  are traced, so new values do not recompile.

  Args:
    params: the model's parameter dict.
    cfg: the model's shape.
    prompts_BxP: left-padded prompt ids (last prompt token at P - 1).
    prompt_lengths_B: real prompt tokens per row, in [1, P].
    key: a PRNG key. Sample g of prompt b at step t uses the noise of
      ``fold_in(key, t)`` at ``[b, g]``, the same whichever prefill layout
      runs.
    group_size: G, samples per prompt.
    max_new_tokens: T, the most tokens generated per sample.
    eos_ids: ids that end a completion (kept in it, masked in).
    temperature: > 0, divides the logits (traced).
    top_p: nucleus mass in (0, 1] (traced; 1 disables).
    top_k: keep the k most likely tokens (traced; 0 disables).
    greedy: argmax decoding (static). ``logp_BxGxT`` is then 0, the
      log-probability under the point mass it was drawn from;
      ``logp_raw_BxGxT`` still holds the model's.
    pad_id: the id written after a completion ends.
    share_prefill: prefill each prompt once for its G samples (default).
      False repeats every prompt G times first, as the peers' samplers
      do; it exists for comparison and gives the same result.
    stop_early: leave the loop as soon as every row has ended.

  Returns:
    A :class:`Rollout`.
  """
  eos_ids = tuple(int(e) for e in eos_ids)
  _check_inputs(cfg, prompts_BxP, prompt_lengths_B, group_size,
                max_new_tokens, eos_ids, temperature, top_p, top_k, greedy)
  b = prompts_BxP.shape[0]
  g, t_max = group_size, max_new_tokens
  lengths = jnp.asarray(prompt_lengths_B, jnp.int32)

  # Weights laid out for decoding once per rollout, not once per token.
  dparams = models.decode_params(params, cfg)
  if share_prefill:
    logits_BxV, cache = models.prefill(params, cfg, prompts_BxP, lengths)
    first_BxGxV = jnp.broadcast_to(logits_BxV[:, None], (b, g,
                                                         cfg.vocab_size))
    decode_cache = models.init_decode_cache(cfg, cache, g, t_max)

    def decode(dcache, tokens_BxG, step):
      return models.decode_step(dparams, cfg, dcache, tokens_BxG, step)
  else:
    rep = jnp.repeat(prompts_BxP, g, axis=0)
    logits_NxV, cache = models.prefill(params, cfg, rep,
                                       jnp.repeat(lengths, g, axis=0))
    first_BxGxV = logits_NxV.reshape(b, g, cfg.vocab_size)
    decode_cache = models.init_decode_cache(cfg, cache, 1, t_max)

    def decode(dcache, tokens_BxG, step):
      logits, dcache = models.decode_step(
          dparams, cfg, dcache, tokens_BxG.reshape(b * g, 1), step)
      return logits.reshape(b, g, cfg.vocab_size), dcache

  eos = jnp.asarray(eos_ids, jnp.int32)

  class _State(NamedTuple):
    step: jax.Array
    logits_BxGxV: jax.Array
    decode_cache: models.DecodeCache
    done_BxG: jax.Array
    tokens_BxGxT: jax.Array
    logp_BxGxT: jax.Array
    logp_raw_BxGxT: jax.Array
    mask_BxGxT: jax.Array

  def pick(s: _State) -> _State:
    """Draws token ``s.step`` from ``s.logits_BxGxV`` and records it."""
    raw = s.logits_BxGxV.astype(jnp.float32)
    if greedy:
      token = jnp.argmax(raw, axis=-1).astype(jnp.int32)
      logp = jnp.zeros(token.shape, jnp.float32)
    else:
      z = filter_logits(raw, temperature, top_p, top_k)
      noise = jax.random.gumbel(jax.random.fold_in(key, s.step), z.shape,
                                jnp.float32)
      token = jnp.argmax(z + noise, axis=-1).astype(jnp.int32)
      logp = _token_logp(z, token)
    logp_raw = _token_logp(raw, token)
    live = ~s.done_BxG
    token = jnp.where(live, token, pad_id)
    done = s.done_BxG | jnp.any(token[..., None] == eos[None, None], axis=-1)

    def write(arr, val):
      return jax.lax.dynamic_update_index_in_dim(arr, val, s.step, axis=2)

    return s._replace(
        done_BxG=done, tokens_BxGxT=write(s.tokens_BxGxT, token),
        logp_BxGxT=write(s.logp_BxGxT, jnp.where(live, logp, 0.0)),
        logp_raw_BxGxT=write(s.logp_raw_BxGxT, jnp.where(live, logp_raw,
                                                         0.0)),
        mask_BxGxT=write(s.mask_BxGxT, live))

  # Every iteration draws a token and feeds it to the model; the last token
  # is drawn after the loop, so no step decodes a token nobody reads (and
  # no per-step branch is needed to skip it).
  def cond(s: _State):
    more = s.step < t_max - 1
    if stop_early:
      more &= ~jnp.all(s.done_BxG)
    return more

  def body(s: _State):
    s = pick(s)
    logits, dcache = decode(s.decode_cache, s.tokens_BxGxT[:, :, s.step],
                            s.step)
    return s._replace(step=s.step + 1, logits_BxGxV=logits,
                      decode_cache=dcache)

  init = _State(
      step=jnp.zeros((), jnp.int32), logits_BxGxV=first_BxGxV,
      decode_cache=decode_cache, done_BxG=jnp.zeros((b, g), bool),
      tokens_BxGxT=jnp.full((b, g, t_max), pad_id, jnp.int32),
      logp_BxGxT=jnp.zeros((b, g, t_max), jnp.float32),
      logp_raw_BxGxT=jnp.zeros((b, g, t_max), jnp.float32),
      mask_BxGxT=jnp.zeros((b, g, t_max), bool))
  # After an early exit every row has ended: the final draw then writes
  # padding over padding.
  final = pick(jax.lax.while_loop(cond, body, init))
  return Rollout(
      tokens_BxGxT=final.tokens_BxGxT, logp_BxGxT=final.logp_BxGxT,
      logp_raw_BxGxT=final.logp_raw_BxGxT, mask_BxGxT=final.mask_BxGxT,
      lengths_BxG=jnp.sum(final.mask_BxGxT, axis=-1, dtype=jnp.int32),
      truncated_BxG=~final.done_BxG)


def make_sampler(cfg: ModelConfig, *, group_size: int, max_new_tokens: int,
                 eos_ids: Sequence[int], greedy: bool = False,
                 pad_id: int = 0, share_prefill: bool = True,
                 stop_early: bool = True, **jit_kwargs):
  """Returns a jitted ``sampler(params, prompts, lengths, key, ...)``.

  Its signature is ``sampler(params, prompts_BxP, prompt_lengths_B, key,
  temperature=1.0, top_p=1.0, top_k=0) -> Rollout``, compiled once.

  The static settings are bound here; the knobs stay traced (passing them as
  Python floats converts them to weakly typed arrays, so new values reuse the
  compiled program). ``jit_kwargs`` go to ``jax.jit`` (e.g. shardings).
  """
  fn = functools.partial(
      sample, cfg=cfg, group_size=group_size, max_new_tokens=max_new_tokens,
      eos_ids=tuple(eos_ids), greedy=greedy, pad_id=pad_id,
      share_prefill=share_prefill, stop_early=stop_early)

  def sampler(params, prompts_BxP, prompt_lengths_B, key, temperature=1.0,
              top_p=1.0, top_k=0):
    return fn(params, prompts_BxP=prompts_BxP,
              prompt_lengths_B=prompt_lengths_B, key=key,
              temperature=temperature, top_p=top_p, top_k=top_k)

  jitted = jax.jit(sampler, **jit_kwargs)

  def call(params, prompts_BxP, prompt_lengths_B, key, temperature=1.0,
           top_p=1.0, top_k=0):
    # Checks on concrete values run here, before tracing.
    _check_inputs(cfg, prompts_BxP, prompt_lengths_B, group_size,
                  max_new_tokens, tuple(eos_ids), temperature, top_p, top_k,
                  greedy)
    return jitted(params, prompts_BxP, prompt_lengths_B, key,
                  jnp.asarray(temperature, jnp.float32),
                  jnp.asarray(top_p, jnp.float32),
                  jnp.asarray(top_k, jnp.int32))

  call.jitted = jitted
  return call
