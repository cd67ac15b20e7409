"""KTAE (arXiv 2505.16826): hand values, an exact per-group loop reference,
token statistics, padding and the edge cases of stepwise.md §9."""

from fractions import Fraction
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_ktae import ktae
from jaxrl_group.advantages._est_ktae import token_counts


def apply(tx, r, tokens, tm, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  return np.asarray(tx.update(
      r, tx.init(r), mask_BxG=mask, tokens_BxGxT=np.asarray(tokens, np.int32),
      token_mask_BxGxT=np.asarray(tm, bool))[0])


def fisher_p(a, b, c, d):
  """Exact two-sided Fisher p-value (rational arithmetic) and 'all counted'."""
  nc, nw, kk = a + c, b + d, a + b
  prob = lambda k: Fraction(math.comb(nc, k) * math.comb(nw, kk - k),
                            math.comb(nc + nw, kk))
  ks = range(max(0, kk - nw), min(kk, nc) + 1)
  counted = [k for k in ks if prob(k) <= prob(a)]
  return float(sum(prob(k) for k in counted)), len(counted) == len(ks)


def info_gain(a, b, c, d):
  n = a + b + c + d

  def ent(x, tot):
    if tot == 0:
      return 0.0
    return -sum(u * math.log2(u) for u in (x / tot, 1 - x / tot) if u > 0)

  return ent(a + c, n) - (a + b) / n * ent(a, a + b) - (c + d) / n * ent(
      c, c + d)


def np_ktae(r, mask, tokens, tm, *, thr=0.0, gamma_tf=1.0, eps=1e-6,
            pad_id=None):
  """Per-group Python loop over vocabulary ids, float64 (upstream's shape)."""
  b_, g_, t_ = tokens.shape
  out = np.zeros((b_, g_, t_))
  for b in range(b_):
    m = mask[b]
    if m.sum() < 2:
      continue
    vals = r[b][m].astype(np.float64)
    seq = (r[b] - vals.mean()) / (vals.std(ddof=1) + eps)
    corr, wrong = m & (r[b] > thr), m & ~(r[b] > thr)
    nc, nw = int(corr.sum()), int(wrong.sum())
    valid = tm[b] & m[:, None]
    key = {}
    if nc and nw:
      n_c_tok = (valid & corr[:, None]).sum()
      n_w_tok = (valid & wrong[:, None]).sum()
      avg = (n_c_tok + n_w_tok) / 2
      for v in set(tokens[b][valid].tolist()):
        is_v = (tokens[b] == v) & valid
        pres = is_v.any(-1)
        a, bb = int((pres & corr).sum()), int((pres & wrong).sum())
        p, every = fisher_p(a, bb, nc - a, nw - bb)
        f = 0.0 if every else math.exp(-2 * p)
        h = (math.asin(math.sqrt(a / (nc + 1e-10)))
             - math.asin(math.sqrt(bb / (nw + 1e-10))))
        if gamma_tf:

          def tf(cnt, tot):
            if tot == 0:
              return 0.0
            fr = cnt / tot
            return fr * 3.0 / (fr + 2.0 * (0.5 + 0.5 * tot / avg))

          tc = tf((is_v & corr[:, None]).sum(), n_c_tok)
          tw = tf((is_v & wrong[:, None]).sum(), n_w_tok)
          h += tc / (tw + 1e-5) - tw / (tc + 1e-5)
        raw = (f + info_gain(a, bb, nc - a, nw - bb)) * h / 2
        key[v] = 0.0 if v == pad_id else math.tanh(raw / 2)
    for i in range(g_):
      for t in range(t_):
        if valid[i, t]:
          out[b, i, t] = seq[i] + key.get(int(tokens[b, i, t]), 0.0)
  return out


def random_batch(rng, b, g, t, vocab):
  r = rng.binomial(1, 0.5, (b, g)).astype(np.float32)
  mask = rng.random((b, g)) < 0.85
  tokens = rng.integers(0, vocab, (b, g, t)).astype(np.int32)
  tm = np.arange(t)[None, None, :] < rng.integers(0, t + 1, (b, g))[..., None]
  return r, mask, tokens, tm


class KtaeTest(parameterized.TestCase):

  def test_hand_values_two_rollouts(self):
    # Correct rollout [5, 7], incorrect [5, 9]; n_c = n_w = 1.
    # GRPO: mean 0.5, std sqrt(0.5) -> +-0.5 / (0.707107 + 1e-6) = 0.707106.
    # Id 5 (in both): one possible table, p = 1 -> F = 0; IG = 0; h = 0;
    #   key 0.
    # Id 7 (correct only): P(0) = P(1) = 1/2 <= P_obs -> p = 1, F = 0;
    #   IG = H(Y) - H(Y|X) = 1 - 0 = 1 bit; h = asin(1) - asin(0) = 1.570786
    #   (the 1e-10 in the denominator); without the BM25 term
    #   raw = (0 + 1) * 1.570786 / 2 = 0.785393, key = 2 sigmoid(raw) - 1
    #   = tanh(0.392697) = 0.373683. Id 9: -0.373683.
    r = [[1.0, 0.0]]
    tokens = [[[5, 7], [5, 9]]]
    tm = np.ones((1, 2, 2), bool)
    adv = apply(ktae(gamma_tf=0.0), r, tokens, tm)
    np.testing.assert_allclose(
        adv, [[[0.707106, 1.080789], [-0.707106, -1.080789]]], rtol=1e-5)
    # With the BM25 term: f_c(7) = 1/2, K = 2 (1 - 0.5 + 0.5 * 2/2) = 2,
    # tf_c = 0.5 * 3 / 2.5 = 0.6, tf_w = 0 -> h += 0.6 / 1e-5 = 60000;
    # raw = 30000.8 and the key saturates at top = 1. For id 5 the term is
    # 0.6 / 0.60001 - 0.6 / 0.60001 = 0.
    adv = apply(ktae(), r, tokens, tm)
    np.testing.assert_allclose(
        adv, [[[0.707106, 1.707106], [-0.707106, -1.707106]]], rtol=1e-5)

  def test_hand_values_fisher(self):
    # Rollouts [3, 1], [3, 2] correct; [4, 1], [4, 2] incorrect.
    # Id 3: table [[2, 0], [0, 2]], K = 2: P(k) = 1/6, 4/6, 1/6 for
    #   k = 0, 1, 2; P_obs = 1/6 -> p = 1/3, F = exp(-2/3) = 0.513417;
    #   IG = 1; h = 1.570789; raw = 1.513417 * 1.570789 / 2 = 1.188634;
    #   key = tanh(0.594317) = 0.532994.
    # Ids 1, 2: table [[1, 1], [1, 1]]: every table counted, p = 1, F = 0,
    #   IG = 0, h = 0 -> key 0.
    # GRPO: +-0.5 / (sqrt(1/3) + 1e-6) = +-0.866024.
    r = [[1.0, 1.0, 0.0, 0.0]]
    tokens = [[[3, 1], [3, 2], [4, 1], [4, 2]]]
    tm = np.ones((1, 4, 2), bool)
    adv = apply(ktae(gamma_tf=0.0), r, tokens, tm)
    np.testing.assert_allclose(adv[0, :, 0],
                               [1.399018, 1.399018, -1.399018, -1.399018],
                               rtol=1e-5)
    np.testing.assert_allclose(adv[0, :, 1],
                               [0.866024, 0.866024, -0.866024, -0.866024],
                               rtol=1e-5)

  @parameterized.named_parameters(
      ("small", 0, 4, 3, 5, 4),
      ("larger", 1, 8, 6, 9, 12),
  )
  def test_matches_exact_loop(self, seed, b, g, t, vocab):
    rng = np.random.default_rng(seed)
    r, mask, tokens, tm = random_batch(rng, b, g, t, vocab)
    mask[0] = True
    r[0, 0], r[0, 1] = 1.0, 0.0  # at least one mixed group
    for gamma_tf in (1.0, 0.0):
      got = apply(ktae(gamma_tf=gamma_tf), r, tokens, tm, mask)
      want = np_ktae(r, mask, tokens, tm, gamma_tf=gamma_tf)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  def test_float64_matches_loop(self):
    rng = np.random.default_rng(2)
    r, mask, tokens, tm = random_batch(rng, 4, 6, 5, 6)
    with jax.enable_x64(True):
      tx = ktae()
      r64 = r.astype(np.float64)
      got = tx.update(r64, tx.init(r64), mask_BxG=mask, tokens_BxGxT=tokens,
                      token_mask_BxGxT=tm)[0]
      self.assertEqual(got.dtype, np.float64)
    np.testing.assert_allclose(np.asarray(got),
                               np_ktae(r, mask, tokens, tm), rtol=1e-9,
                               atol=1e-9)

  def test_token_counts(self):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 4, (2, 3, 5)).astype(np.int32)
    valid = rng.random((2, 3, 5)) < 0.7
    correct = np.array([[True, False, True], [False, False, True]])
    got = token_counts(tokens, valid, correct)
    for b in range(2):
      for i in range(3):
        for t in range(5):
          if not valid[b, i, t]:
            continue
          is_v = (tokens[b] == tokens[b, i, t]) & valid[b]
          pres = is_v.any(-1)
          self.assertEqual(int(got.a[b, i, t]), (pres & correct[b]).sum())
          self.assertEqual(int(got.b[b, i, t]), (pres & ~correct[b]).sum())
          self.assertEqual(int(got.count_c[b, i, t]),
                           (is_v & correct[b][:, None]).sum())
          self.assertEqual(int(got.count_w[b, i, t]),
                           (is_v & ~correct[b][:, None]).sum())

  def test_padding_and_masked_rollouts_are_ignored(self):
    rng = np.random.default_rng(4)
    r, mask, tokens, tm = random_batch(rng, 3, 5, 4, 5)
    ref = apply(ktae(), r, tokens, tm, mask)
    # Padded tokens (any id) and masked rollouts (any tokens, rewards) do not
    # change anything; extra padding along T only appends zeros.
    tokens2 = np.where(tm & mask[..., None], tokens, 99)
    r2 = np.where(mask, r, 1.0 - r)
    got = apply(ktae(), r2, tokens2, tm, mask)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    pad_t = np.concatenate([tokens, np.full((3, 5, 3), 2, np.int32)], -1)
    pad_m = np.concatenate([tm, np.zeros((3, 5, 3), bool)], -1)
    got = apply(ktae(), r, pad_t, pad_m, mask)
    np.testing.assert_allclose(got[..., :4], ref, rtol=1e-6)
    np.testing.assert_array_equal(got[..., 4:], 0.0)
    np.testing.assert_array_equal(ref[~(tm & mask[..., None])], 0.0)

  def test_rollout_permutation_equivariance(self):
    rng = np.random.default_rng(5)
    r, mask, tokens, tm = random_batch(rng, 3, 5, 4, 5)
    perm = rng.permutation(5)
    ref = apply(ktae(), r, tokens, tm, mask)
    got = apply(ktae(), r[:, perm], tokens[:, perm], tm[:, perm],
                mask[:, perm])
    np.testing.assert_allclose(got, ref[:, perm], rtol=1e-5, atol=1e-6)

  def test_homogeneous_group_gets_no_key(self):
    # All correct: key 0 everywhere, and GRPO gives 0.
    tokens = [[[1, 2], [4, 4]]]
    tm = np.ones((1, 2, 2), bool)
    np.testing.assert_array_equal(apply(ktae(), [[1.0, 1.0]], tokens, tm),
                                  0.0)
    # Unequal rewards but all above the threshold: GRPO only, key 0.
    adv = apply(ktae(), [[1.0, 0.5]], tokens, tm)
    np.testing.assert_allclose(adv[0, 0], 0.707106, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1], -0.707106, rtol=1e-5)

  def test_pad_id_and_threshold(self):
    r = [[1.0, 0.0]]
    tokens = [[[5, 7], [5, 9]]]
    tm = np.ones((1, 2, 2), bool)
    adv = apply(ktae(gamma_tf=0.0, pad_id=7), r, tokens, tm)
    np.testing.assert_allclose(adv[0, 0], [0.707106, 0.707106], rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1, 1], -1.080789, rtol=1e-5)
    # +-1 rewards with the default threshold 0 equal 1/0 rewards; a
    # threshold of 2 makes every rollout incorrect (no key).
    pm = apply(ktae(), [[1.0, -1.0]], tokens, tm)
    np.testing.assert_allclose(pm, apply(ktae(), r, tokens, tm), rtol=1e-5)
    hi = apply(ktae(success_threshold=2.0), r, tokens, tm)
    np.testing.assert_allclose(np.abs(hi), 0.707106, rtol=1e-5)

  def test_singleton_conventions(self):
    tokens = [[[5, 7], [5, 9]]]
    tm = np.ones((1, 2, 2), bool)
    mask = [[True, False]]
    np.testing.assert_array_equal(
        apply(ktae(), [[0.7, 0.0]], tokens, tm, mask), 0.0)
    adv = apply(ktae(singleton="raw"), [[0.7, 0.0]], tokens, tm, mask)
    np.testing.assert_allclose(adv[0, 0], 0.7 / (1 + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(adv[0, 1], 0.0)

  def test_empty_statistics_are_finite(self):
    # A correct rollout without valid tokens: N_c = 0 (upstream divides by
    # 0 in the BM25 term); keys stay finite.
    tokens = [[[5, 7], [5, 9], [1, 1]]]
    tm = np.array([[[False, False], [True, True], [True, False]]])
    adv = apply(ktae(), [[1.0, 0.0, 0.0]], tokens, tm)
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_allclose(adv, np_ktae(
        np.array([[1.0, 0.0, 0.0]]), np.ones((1, 3), bool),
        np.array(tokens), tm), rtol=1e-5, atol=1e-6)

  def test_bad_input(self):
    r = np.zeros((1, 2), np.float32)
    tm = np.ones((1, 2, 2), bool)
    with self.assertRaisesRegex(A.MissingContextError, "tokens_BxGxT"):
      ktae().update(r, A.EmptyState(), token_mask_BxGxT=tm)
    with self.assertRaisesRegex(A.MissingContextError, "token_mask_BxGxT"):
      ktae().update(r, A.EmptyState(), tokens_BxGxT=np.ones((1, 2, 2), int))
    with self.assertRaisesRegex(TypeError, "tokens_BxGxT must be an integer"):
      ktae().update(r, A.EmptyState(), token_mask_BxGxT=tm,
                    tokens_BxGxT=np.ones((1, 2, 2), np.float32))
    with self.assertRaisesRegex(TypeError, "token_mask_BxGxT must be a "
                                "boolean"):
      ktae().update(r, A.EmptyState(), tokens_BxGxT=np.ones((1, 2, 2), int),
                    token_mask_BxGxT=np.ones((1, 2, 2), np.float32))
    with self.assertRaisesRegex(ValueError, r"ktae: tokens_BxGxT must have "
                                r"shape \[B, G, T\] = \(1, 2, '\?'\)"):
      apply(ktae(), r, np.ones((1, 3, 2)), tm)
    with self.assertRaisesRegex(ValueError, "alpha \\+ beta_ig must not be 0"):
      ktae(alpha=0.0, beta_ig=0.0)


if __name__ == "__main__":
  absltest.main()
