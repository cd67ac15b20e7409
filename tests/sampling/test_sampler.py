"""The sampler: teacher-forcing parity, EOS handling, filters, sharding, errors.

Every rollout is checked against an independent pass of the model over the
sampled tokens (``prefill`` + ``extend``, and a plain ``forward`` over prompt
and completion), so the sampler's cache handling cannot drift from the
model's. Samplers and rollouts are built once per process and shared.
"""

import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_group import models
from jaxrl_group import parallel
from jaxrl_group import sampling
from jaxrl_group.sampling import filter_logits

CFG = models.get_model_config("tiny")
B, PW, G, T = 8, 6, 3, 8            # prompts, prompt width, group, new tokens
# Eight of the 64 ids end a completion, so that with a random model about a
# third of the rows run to T and the rest end at varied steps.
EOS = (1, 7, 13, 19, 25, 31, 37, 43)
KNOBS = dict(temperature=0.7, top_p=0.9, top_k=20)
TOL = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def params():
  return jax.jit(models.init_params, static_argnums=0)(CFG, jax.random.key(0))


@functools.cache
def prompts():
  """Left-padded ``[B, PW]`` prompts with lengths from 1 to PW."""
  lengths_B = np.array([6, 1, 3, 6, 2, 5, 4, 6], np.int32)
  ids_BxP = np.random.default_rng(0).integers(4, CFG.vocab_size, (B, PW))
  real_BxP = np.arange(PW)[None, :] >= (PW - lengths_B)[:, None]
  return (jnp.asarray(np.where(real_BxP, ids_BxP, 0), jnp.int32),
          jnp.asarray(lengths_B))


@functools.cache
def sampler(group_size=G, max_new_tokens=T, eos_ids=EOS, **static):
  return sampling.make_sampler(CFG, group_size=group_size,
                               max_new_tokens=max_new_tokens,
                               eos_ids=eos_ids, **static)


@functools.cache
def rollout(seed=1, **static):
  """The rollout of the shared prompts under ``KNOBS`` (greedy: none)."""
  knobs = {} if static.get("greedy") else KNOBS
  out = sampler(**static)(params(), *prompts(), jax.random.key(seed),
                          **knobs)
  return jax.tree.map(np.asarray, out)


@jax.jit
def teacher_logits(params_, prompts_BxP, lengths_B, tokens_BxGxT):
  """Next-token logits ``[B, G, T, V]`` of a teacher-forced pass."""
  first_BxV, cache = models.prefill(params_, CFG, prompts_BxP, lengths_B)
  rest_BxGxTxV = models.extend(params_, CFG, cache, tokens_BxGxT)
  g = tokens_BxGxT.shape[1]
  first_BxGx1xV = jnp.broadcast_to(first_BxV[:, None, None],
                                   (B, g, 1, CFG.vocab_size))
  return jnp.concatenate([first_BxGx1xV, rest_BxGxTxV[:, :, :-1]], axis=2)


@jax.jit
def forward_logits(params_, prompts_BxP, lengths_B, tokens_BxGxT):
  """The same logits from one causal ``forward`` over prompt + completion."""
  b, g, t = tokens_BxGxT.shape
  mask_BxP, _ = models.prompt_layout(lengths_B, PW)
  seq_NxS = jnp.concatenate([jnp.repeat(prompts_BxP, g, axis=0),
                             tokens_BxGxT.reshape(b * g, t)], axis=1)
  mask_NxS = jnp.concatenate([jnp.repeat(mask_BxP, g, axis=0),
                              jnp.ones((b * g, t), bool)], axis=1)
  logits_NxSxV = models.forward(params_, CFG, seq_NxS, mask_BxS=mask_NxS)
  return logits_NxSxV[:, PW - 1:PW - 1 + t].reshape(b, g, t, -1)


def token_logp(logits_BxGxTxV, tokens_BxGxT):
  logp = jax.nn.log_softmax(jnp.asarray(logits_BxGxTxV), axis=-1)
  return np.asarray(jnp.take_along_axis(
      logp, jnp.asarray(tokens_BxGxT)[..., None], axis=-1)[..., 0])


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


# --------------------------------------------------------------------------
# Log-probabilities against teacher forcing.


def test_logp_raw_equals_teacher_forcing():
  r = rollout()
  assert r.tokens_BxGxT.shape == (B, G, T)
  via_extend = teacher_logits(params(), *prompts(), r.tokens_BxGxT)
  via_forward = forward_logits(params(), *prompts(), r.tokens_BxGxT)
  np.testing.assert_allclose(via_extend, via_forward, **TOL)
  for logits in (via_extend, via_forward):
    want = np.where(r.mask_BxGxT, token_logp(logits, r.tokens_BxGxT), 0.0)
    np.testing.assert_allclose(r.logp_raw_BxGxT, want, **TOL)


def test_logp_is_under_the_filtered_distribution():
  r = rollout()
  logits = teacher_logits(params(), *prompts(), r.tokens_BxGxT)
  z = filtered(logits, **KNOBS)
  # The filters are active: some tokens are cut, and the sampled ones never.
  assert np.any(np.isneginf(np.asarray(z)))
  want = np.where(r.mask_BxGxT, token_logp(z, r.tokens_BxGxT), 0.0)
  np.testing.assert_allclose(r.logp_BxGxT, want, **TOL)
  assert np.all(np.isfinite(r.logp_BxGxT))
  # Filtering and temperature < 1 sharpen: the sampled tokens are likelier.
  valid = r.mask_BxGxT
  assert np.mean(r.logp_BxGxT[valid]) > np.mean(r.logp_raw_BxGxT[valid])


def test_shared_prefill_equals_repeated_prompts():
  shared, repeated = rollout(), rollout(share_prefill=False)
  np.testing.assert_array_equal(shared.tokens_BxGxT, repeated.tokens_BxGxT)
  np.testing.assert_array_equal(shared.mask_BxGxT, repeated.mask_BxGxT)
  np.testing.assert_allclose(shared.logp_BxGxT, repeated.logp_BxGxT, **TOL)
  np.testing.assert_allclose(shared.logp_raw_BxGxT, repeated.logp_raw_BxGxT,
                             **TOL)


def test_scanned_decode_layers_equal_unrolled():
  scan_cfg = CFG.replace(decode_layers="scan")
  scanned = jax.tree.map(np.asarray, sampling.make_sampler(
      scan_cfg, group_size=G, max_new_tokens=T, eos_ids=EOS)(
          params(), *prompts(), jax.random.key(1), **KNOBS))
  unrolled = rollout()
  np.testing.assert_array_equal(scanned.tokens_BxGxT, unrolled.tokens_BxGxT)
  np.testing.assert_array_equal(scanned.mask_BxGxT, unrolled.mask_BxGxT)
  np.testing.assert_allclose(scanned.logp_BxGxT, unrolled.logp_BxGxT, **TOL)


def test_samples_of_a_group_differ_and_keys_matter():
  r, other = rollout(), rollout(seed=2)
  # G independent samples per prompt, not one sample copied G times.
  assert np.any(r.tokens_BxGxT[:, 0] != r.tokens_BxGxT[:, 1])
  assert np.any(r.tokens_BxGxT != other.tokens_BxGxT)


# --------------------------------------------------------------------------
# EOS, lengths and padding.


def expected_layout(tokens_BxGxT, eos_ids):
  """Lengths, mask and truncation of each row, from its first EOS, in numpy."""
  is_eos = np.isin(tokens_BxGxT, eos_ids)
  truncated = ~np.any(is_eos, axis=-1)
  lengths = np.where(truncated, tokens_BxGxT.shape[-1],
                     np.argmax(is_eos, axis=-1) + 1)
  mask = np.arange(tokens_BxGxT.shape[-1]) < lengths[..., None]
  return lengths, mask, truncated


def test_eos_ends_rows_and_pads_after():
  r = rollout()
  lengths, mask, truncated = expected_layout(r.tokens_BxGxT, EOS)
  # The seed gives both kinds of rows, and rows ending at several steps.
  assert np.any(truncated) and np.any(~truncated)
  assert len(np.unique(lengths[~truncated])) >= 3
  np.testing.assert_array_equal(r.lengths_BxG, lengths)
  np.testing.assert_array_equal(r.mask_BxGxT, mask)
  np.testing.assert_array_equal(r.truncated_BxG, truncated)
  np.testing.assert_array_equal(r.tokens_BxGxT[~mask], 0)
  assert np.all(r.logp_BxGxT[~mask] == 0) and np.all(
      r.logp_raw_BxGxT[~mask] == 0)
  # The last valid token of an ended row is one of the EOS ids.
  b, g = np.nonzero(~truncated)
  assert np.all(np.isin(r.tokens_BxGxT[b, g, lengths[b, g] - 1], EOS))
  # Each of several EOS ids ended some row.
  assert len(set(r.tokens_BxGxT[b, g, lengths[b, g] - 1].tolist())) >= 2


def test_stop_early_changes_nothing():
  early, full = rollout(), rollout(stop_early=False)
  for name in ("tokens_BxGxT", "mask_BxGxT", "lengths_BxG",
               "truncated_BxG"):
    np.testing.assert_array_equal(getattr(early, name), getattr(full, name))
  np.testing.assert_allclose(early.logp_BxGxT, full.logp_BxGxT, **TOL)
  np.testing.assert_allclose(early.logp_raw_BxGxT, full.logp_raw_BxGxT,
                             **TOL)


def test_forced_eos_ends_every_row_after_one_token():
  # A large constant residual component that only the EOS column reads:
  # every position's EOS logit is ~8 * 1000 above the others.
  forced = jax.tree.map(lambda x: x, params())
  forced["embed"] = forced["embed"].at[:, 0].set(50.0)
  forced["lm_head"] = forced["lm_head"].at[0, EOS[2]].set(1000.0)
  r = jax.tree.map(np.asarray, sampler()(
      forced, *prompts(), jax.random.key(1), **KNOBS))
  np.testing.assert_array_equal(r.tokens_BxGxT[..., 0], EOS[2])
  np.testing.assert_array_equal(r.tokens_BxGxT[..., 1:], 0)
  np.testing.assert_array_equal(r.lengths_BxG, 1)
  np.testing.assert_array_equal(r.mask_BxGxT,
                                np.broadcast_to(np.arange(T) < 1, (B, G, T)))
  assert not np.any(r.truncated_BxG)
  np.testing.assert_allclose(r.logp_BxGxT[..., 0], 0.0, atol=1e-6)
  np.testing.assert_allclose(r.logp_raw_BxGxT[..., 0], 0.0, atol=1e-6)


# --------------------------------------------------------------------------
# Greedy decoding.


def test_greedy_is_argmax_of_teacher_forcing():
  r = rollout(greedy=True, pad_id=3)
  logits = np.asarray(teacher_logits(params(), *prompts(), r.tokens_BxGxT))
  lengths, mask, truncated = expected_layout(r.tokens_BxGxT, EOS)
  np.testing.assert_array_equal(r.mask_BxGxT, mask)
  np.testing.assert_array_equal(r.lengths_BxG, lengths)
  np.testing.assert_array_equal(r.truncated_BxG, truncated)
  np.testing.assert_array_equal(r.tokens_BxGxT[mask],
                                np.argmax(logits, axis=-1)[mask])
  np.testing.assert_array_equal(r.tokens_BxGxT[~mask], 3)
  # All G samples of a prompt are the same argmax path.
  np.testing.assert_array_equal(r.tokens_BxGxT,
                                np.repeat(r.tokens_BxGxT[:, :1], G, axis=1))
  np.testing.assert_array_equal(r.logp_BxGxT, 0.0)
  want = np.where(mask, token_logp(logits, r.tokens_BxGxT), 0.0)
  np.testing.assert_allclose(r.logp_raw_BxGxT, want, **TOL)


# --------------------------------------------------------------------------
# filter_logits golden values.

# Probabilities 0.1, 0.2, 0.3, 0.4 exactly (as log-probs).
LOGITS_V = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
NEG = -np.inf


# Jitted once per shape; the knobs are traced.
jit_filter = jax.jit(filter_logits)


def filtered(logits, temperature=1.0, top_p=1.0, top_k=0):
  return np.asarray(jit_filter(jnp.asarray(logits), jnp.float32(temperature),
                               jnp.float32(top_p), jnp.int32(top_k)))


@pytest.mark.parametrize("top_p, top_k, kept", [
    (1.0, 2, (2, 3)),          # top-k only
    (1.0, 1, (3,)),
    (1.0, 4, (0, 1, 2, 3)),    # k = V keeps all
    (1.0, 99, (0, 1, 2, 3)),   # k > V keeps all
    # top-p only: mass before each sorted token is 0, .4, .7, .9
    (0.5, 0, (2, 3)),
    (0.75, 0, (1, 2, 3)),
    (0.95, 0, (0, 1, 2, 3)),
    (0.3, 0, (3,)),            # the first token is always kept,
    (1e-6, 0, (3,)),           # however small top_p
    # both: after top-3 the mass before is 0, 4/9, 7/9
    (0.75, 3, (2, 3)),
    (0.8, 3, (1, 2, 3)),
    (0.5, 1, (3,)),
])
def test_filter_logits_keeps_the_right_tokens(top_p, top_k, kept):
  out = filtered(LOGITS_V, 1.0, top_p, top_k)
  want = np.full(4, NEG, np.float32)
  want[list(kept)] = LOGITS_V[list(kept)]
  np.testing.assert_array_equal(out, want)


def test_filter_logits_temperature_golden():
  # Disabled filters: exactly logits / temperature.
  np.testing.assert_allclose(filtered(LOGITS_V, 0.5), LOGITS_V / 0.5,
                             rtol=1e-6)
  np.testing.assert_array_equal(filtered(LOGITS_V, 1.0), LOGITS_V)
  # tau = 0.5 squares the probabilities: (1, 4, 9, 16) / 30, so the mass
  # before each sorted token is 0, 16/30, 25/30; top_p = 0.8 keeps two
  # (at tau = 1 it keeps three).
  out = filtered(LOGITS_V, 0.5, 0.8)
  np.testing.assert_allclose(out[2:], LOGITS_V[2:] / 0.5, rtol=1e-6)
  assert np.all(np.isneginf(out[:2]))
  assert np.sum(np.isfinite(filtered(LOGITS_V, 1.0, 0.8))) == 3
  # tau = 2 flattens: sqrt(p) normalised is .163, .230, .282, .325 (before:
  # 0, .325, .607, .837), so top_p = 0.85 keeps all four (at tau = 1,
  # before is 0, .4, .7, .9: three).
  assert np.all(np.isfinite(filtered(LOGITS_V, 2.0, 0.85)))
  assert np.sum(np.isfinite(filtered(LOGITS_V, 1.0, 0.85))) == 3


def test_filter_logits_batched_rows_and_ties():
  rng = np.random.default_rng(0)
  logits_NxV = rng.normal(size=(2, 3, 10)).astype(np.float32) * 3
  out = filtered(logits_NxV, 0.8, 0.7, 4)
  for row, got in zip(logits_NxV.reshape(-1, 10), out.reshape(-1, 10)):
    z = row.astype(np.float64) / 0.8
    order = np.argsort(-z)[:4]
    p = np.exp(np_log_softmax(z[order]))
    n_keep = max(1, int(np.sum(np.cumsum(p) - p < 0.7)))
    want = np.full(10, NEG)
    want[order[:n_keep]] = z[order[:n_keep]]
    np.testing.assert_allclose(got, want, rtol=1e-6)
  # Ties at the threshold are all kept.
  tied = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
  np.testing.assert_array_equal(filtered(tied, 1.0, 1.0, 1),
                                [1.0, 1.0, 1.0, NEG])


# --------------------------------------------------------------------------
# The sampling distribution.


N_DRAWS = 8192


@functools.cache
def spread_params():
  # Larger output weights spread the logits (std ~1.6), so that the
  # filters cut off a fair share of the mass.
  p = jax.tree.map(lambda x: x, params())
  p["lm_head"] = p["lm_head"] * 10.0
  return p


@pytest.mark.parametrize("temperature, top_p, top_k", [
    (1.0, 1.0, 0), (0.7, 0.8, 0), (1.3, 1.0, 12), (0.8, 0.9, 6)])
def test_first_token_frequencies_match_filtered_softmax(temperature, top_p,
                                                        top_k):
  prompts_BxP, lengths_B = prompts()
  one_prompt = (prompts_BxP[:1], lengths_B[:1])
  s = sampler(group_size=N_DRAWS, max_new_tokens=1)
  r = s(spread_params(), *one_prompt, jax.random.key(7),
        temperature=temperature, top_p=top_p, top_k=top_k)
  first_V, _ = jax.jit(lambda p, x, n: models.prefill(p, CFG, x, n))(
      spread_params(), *one_prompt)
  z = filtered(first_V[0], temperature, top_p, top_k).astype(np.float64)
  probs = np.exp(np_log_softmax(z))
  tokens = np.asarray(r.tokens_BxGxT)[0, :, 0]
  counts = np.bincount(tokens, minlength=CFG.vocab_size)
  kept = probs > 0
  assert np.all(counts[~kept] == 0), "a filtered-out token was drawn"
  if top_p < 1 or top_k > 0:
    assert np.sum(~kept) >= 10
  # Pearson chi-square over the kept tokens: mean df, sd sqrt(2 df); the
  # bound is ~6 sd out.
  expected = N_DRAWS * probs[kept]
  chi2 = np.sum((counts[kept] - expected) ** 2 / expected)
  df = np.sum(kept) - 1
  assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, df)
  # Reported log-probs are those of the drawn tokens.
  np.testing.assert_allclose(np.asarray(r.logp_BxGxT)[0, :, 0],
                             np.log(probs[tokens]), rtol=1e-5, atol=1e-5)
  raw = np_log_softmax(np.asarray(first_V[0], np.float64))
  np.testing.assert_allclose(np.asarray(r.logp_raw_BxGxT)[0, :, 0],
                             raw[tokens], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Compilation, sharding.


def test_new_knobs_and_keys_do_not_recompile():
  s = sampler()
  rollout()  # compiled with this sampler's shapes
  n = s.jitted._cache_size()
  for seed, knobs in enumerate([
      dict(temperature=0.3, top_p=0.5, top_k=3), dict(temperature=1.0),
      dict(top_p=0.99), dict(top_k=7), dict(temperature=2, top_p=1, top_k=0),
      dict(temperature=np.float32(0.9), top_p=jnp.float32(0.4),
           top_k=jnp.int32(2))]):
    jax.block_until_ready(s(params(), *prompts(), jax.random.key(seed),
                            **knobs))
  assert s.jitted._cache_size() == n


def test_sharded_over_eight_devices_equals_one_device():
  mesh = parallel.make_mesh((("data", 8),))
  batch = NamedSharding(mesh, P("data"))
  rep = NamedSharding(mesh, P())
  prompts_BxP, lengths_B = prompts()
  out = sampler()(jax.device_put(params(), rep),
                  jax.device_put(prompts_BxP, batch),
                  jax.device_put(lengths_B, batch),
                  jax.device_put(jax.random.key(1), rep), **KNOBS)
  single = rollout()
  np.testing.assert_array_equal(out.tokens_BxGxT, single.tokens_BxGxT)
  np.testing.assert_array_equal(out.mask_BxGxT, single.mask_BxGxT)
  np.testing.assert_array_equal(out.lengths_BxG, single.lengths_BxG)
  np.testing.assert_allclose(out.logp_BxGxT, single.logp_BxGxT, **TOL)
  np.testing.assert_allclose(out.logp_raw_BxGxT, single.logp_raw_BxGxT,
                             **TOL)
  assert len(out.tokens_BxGxT.sharding.device_set) == 8


# --------------------------------------------------------------------------
# Input errors, raised before anything is traced.


@pytest.mark.parametrize("change, error, words", [
    (dict(prompts_BxP=jnp.zeros((B, CFG.max_seq_len - T + 1), jnp.int32)),
     ValueError, "max_new_tokens"),
    (dict(prompt_lengths_B=jnp.zeros((B,), jnp.int32)), ValueError,
     "prompt_lengths_B"),
    (dict(prompt_lengths_B=jnp.full((B,), PW + 1, jnp.int32)), ValueError,
     "prompt_lengths_B"),
    (dict(prompt_lengths_B=jnp.ones((B + 1,), jnp.int32)), ValueError,
     "prompt_lengths_B"),
    (dict(prompts_BxP=jnp.zeros((B, PW), jnp.float32)), TypeError,
     "prompts_BxP"),
    (dict(prompts_BxP=jnp.zeros((B,), jnp.int32)), ValueError,
     "prompts_BxP"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "greedy=True"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_k=2.5), TypeError, "top_k"),
])
def test_bad_inputs_raise_before_tracing(change, error, words):
  s = sampler(stop_early=False, pad_id=5)  # never compiled by other tests
  prompts_BxP, lengths_B = prompts()
  args = dict(prompts_BxP=prompts_BxP, prompt_lengths_B=lengths_B,
              temperature=1.0, top_p=1.0, top_k=0)
  args.update(change)
  with pytest.raises(error, match=words):
    s(params(), args["prompts_BxP"], args["prompt_lengths_B"],
      jax.random.key(0), temperature=args["temperature"],
      top_p=args["top_p"], top_k=args["top_k"])
  assert s.jitted._cache_size() == 0


@pytest.mark.parametrize("static, words", [
    (dict(eos_ids=()), "eos_ids"),
    (dict(eos_ids=(CFG.vocab_size,)), "eos id"),
    (dict(group_size=0), "group_size"),
    (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_bad_settings_raise_before_tracing(static, words):
  s = sampling.make_sampler(CFG, **{**dict(group_size=G, max_new_tokens=T,
                                           eos_ids=EOS), **static})
  with pytest.raises(ValueError, match=words):
    s(params(), *prompts(), jax.random.key(0))
  assert s.jitted._cache_size() == 0


def test_greedy_accepts_any_temperature():
  # temperature is unused by argmax decoding, so 0 is allowed there.
  s = sampler(greedy=True, pad_id=3)
  r = s(params(), *prompts(), jax.random.key(1), temperature=0.0)
  np.testing.assert_array_equal(r.tokens_BxGxT,
                                rollout(greedy=True, pad_id=3).tokens_BxGxT)
