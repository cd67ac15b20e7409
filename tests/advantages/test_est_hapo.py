"""Golden values for hapo's token-level group average (arXiv 2509.16591)."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_hapo import hapo


def tmask(lengths, t):
  lengths = np.asarray(lengths)
  return np.arange(t)[None, None, :] < lengths[..., None]


def apply(tx, r, lengths, t, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  tm = tmask(lengths, t)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask,
                              token_mask_BxGxT=tm)[0])


def np_hapo(r, lengths, mask, t, *, check="valid", eps=1e-6, thr=5.0):
  """The released per-group loop, float64; ``check`` "code" includes the
  padded positions (value (0 - mu) / (sigma + eps)) in the fallback test."""
  b, g = r.shape
  out = np.zeros((b, g, t))
  for i in range(b):
    idx = np.flatnonzero(mask[i])
    if not len(idx):
      continue
    scores = np.zeros((len(idx), t))
    m = tmask(lengths[i][idx][None], t)[0]
    scores[m] = np.repeat(r[i][idx], lengths[i][idx])
    vals = scores[m]
    if vals.size:
      mu, sd = vals.mean(), vals.std()
    else:
      mu, sd = 0.0, 0.0
    normed = (scores - mu) / (sd + eps)
    test = normed if check == "code" else np.where(m, normed, 0)
    if np.any(np.abs(test) >= thr):
      x = r[i][idx].astype(np.float64)
      if len(x) > 1:
        seq = (x - x.mean()) / (x.std(ddof=1) + eps)
      else:
        seq = np.zeros_like(x)
      normed = np.repeat(seq[:, None], t, axis=1)
    out[i][idx] = np.where(m, normed, 0)
  return out


class HapoTest(parameterized.TestCase):

  def test_hand_values_length_weighted(self):
    # r = [1, 0, 0], L = [1, 2, 3]: 6 tokens, mu = 1/6,
    # var_pop = (1 (5/6)^2 + 5 (1/6)^2) / 6 = 5/36, sigma = sqrt(5)/6.
    # A = (5/6) / (sqrt(5)/6) = sqrt(5) = 2.2360680 and
    # -(1/6) / (sqrt(5)/6) = -1/sqrt(5) = -0.4472136; no |A| >= 5.
    adv = apply(hapo(), [[1.0, 0.0, 0.0]], [[1, 2, 3]], 4)
    want = np.zeros((1, 3, 4))
    want[0, 0, :1] = 2.2360680
    want[0, 1, :2] = -0.4472136
    want[0, 2, :3] = -0.4472136
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
    # Without the std: r - mu = [5/6, -1/6, -1/6].
    adv = apply(hapo(norm_by_std=False), [[1.0, 0.0, 0.0]], [[1, 2, 3]], 4)
    np.testing.assert_allclose(adv[0, :, 0], [5 / 6, -1 / 6, -1 / 6],
                               rtol=1e-6)

  def test_fallback_to_grpo_at_five(self):
    # r = [1, 0], L = [1, 30]: the correct token share is p = 1/31 and its
    # A = sqrt((1 - p) / p) = sqrt(30) = 5.477 >= 5, so the group falls
    # back to GRPO: mean 0.5, unbiased std sqrt(0.5) -> +-0.7071058.
    adv = apply(hapo(), [[1.0, 0.0]], [[1, 30]], 30)
    np.testing.assert_allclose(adv[0, 0, 0], 0.7071058, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1, :30], -0.7071058, rtol=1e-5)
    # L = [1, 24]: A = sqrt(24) = 4.899 < 5: no fallback; the other sample
    # gets -1/sqrt(24) = -0.2041241.
    adv = apply(hapo(), [[1.0, 0.0]], [[1, 24]], 30)
    np.testing.assert_allclose(adv[0, 0, 0], np.sqrt(24), rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1, :24], -0.2041241, rtol=1e-5)
    # A lower threshold triggers it.
    adv = apply(hapo(fallback_threshold=4.5), [[1.0, 0.0]], [[1, 24]], 30)
    np.testing.assert_allclose(adv[0, 0, 0], 0.7071058, rtol=1e-5)

  def test_padded_positions_pitfall(self):
    # r = [1.0, 0.8], L = [2, 2]: mu = 0.9, sigma_pop = 0.1, A = +-1 at
    # valid tokens. At a padded position the code's value is
    # (0 - 0.9) / 0.1 = -9, so with any padding "code" falls back to GRPO:
    # 0.1 / (sqrt(0.02) + 1e-6) = +-0.7071. "valid" ignores the padding.
    r = [[1.0, 0.8]]
    for t in (2, 4):
      np.testing.assert_allclose(apply(hapo(), r, [[2, 2]], t)[0, :, 0],
                                 [0.99999, -0.99999], rtol=1e-5)
    np.testing.assert_allclose(
        apply(hapo(fallback_check="code"), r, [[2, 2]], 2)[0, :, 0],
        [0.99999, -0.99999], rtol=1e-5)
    np.testing.assert_allclose(
        apply(hapo(fallback_check="code"), r, [[2, 2]], 4)[0, :, 0],
        [0.7071017, -0.7071017], rtol=1e-5)

  def test_padding_invariance_of_the_default(self):
    rng = np.random.default_rng(0)
    b, g, t = 12, 5, 7
    r = rng.binomial(1, 0.4, (b, g)).astype(np.float32)
    r[:3] += rng.uniform(0, 1, (3, g)).astype(np.float32)
    lengths = rng.integers(0, t + 1, (b, g))
    lengths[0] = [1, 7, 7, 7, 7]  # minority correct answer: fallback
    r[0] = [1, 0, 0, 0, 0]
    mask = rng.random((b, g)) < 0.9
    mask[0] = True
    short = apply(hapo(), r, lengths, t, mask)
    for extra in (1, 9):
      long = apply(hapo(), r, lengths, t + extra, mask)
      np.testing.assert_allclose(long[..., :t], short, rtol=1e-6, atol=1e-7)
      np.testing.assert_array_equal(long[..., t:], 0)
    self.assertGreater(np.abs(short).max(), 0.5)

  @parameterized.parameters("valid", "code")
  def test_matches_numpy_loop(self, check):
    rng = np.random.default_rng(1)
    b, g, t = 24, 6, 9
    r = rng.binomial(1, 0.3, (b, g)).astype(np.float32)
    r[:6] = np.round(rng.uniform(0, 1, (6, g)), 1)
    r[6] = 0.7  # all equal, non-zero: "code" falls back (to 0) if padded
    lengths = rng.integers(0, t + 1, (b, g))
    lengths[7] = [1, 9, 9, 9, 9, 9]
    r[7] = [1, 0, 0, 0, 0, 0]
    mask = rng.random((b, g)) < 0.85
    mask[8, 1:] = False  # singleton
    r[9] = [0.9, 1.0, 0.8, 0.9, 1.0, 0.95]  # "code": padding -> fallback
    mask[9], lengths[9, 0] = True, 3
    got = apply(hapo(fallback_check=check), r, lengths, t, mask)
    np.testing.assert_allclose(got, np_hapo(r, lengths, mask, t,
                                            check=check),
                               rtol=1e-4, atol=1e-5)
    other = "code" if check == "valid" else "valid"
    diff = np.abs(got - np_hapo(r, lengths, mask, t, check=other))
    np.testing.assert_array_equal(np.flatnonzero(diff.max(axis=(1, 2)) > 1e-3),
                                  [9])

  def test_empty_response_and_masked_samples_carry_no_weight(self):
    # r = [1, 0, 5], L = [1, 2, 0]: the third has no tokens. mu = 1/3,
    # sigma = sqrt((1 (2/3)^2 + 2 (1/3)^2) / 3) = sqrt(2/9) = 0.4714045;
    # A = (2/3) / 0.4714045 = 1.4142136, -(1/3) / 0.4714045 = -0.7071068.
    adv = apply(hapo(), [[1.0, 0.0, 5.0]], [[1, 2, 0]], 3)
    np.testing.assert_allclose(adv[0, 0, 0], 1.4142136, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 1, :2], -0.7071068, rtol=1e-5)
    np.testing.assert_array_equal(adv[0, 2], 0)
    # The same through the sample mask (with a huge masked reward).
    adv2 = apply(hapo(), [[1.0, 0.0, 1e6]], [[1, 2, 3]], 3,
                 mask=[[True, True, False]])
    np.testing.assert_allclose(adv2, adv, rtol=1e-6)

  def test_singleton_all_equal_and_empty_groups_are_finite(self):
    # Singleton: sigma = 0, A = 0 / eps = 0 ("valid"). "code" with padding
    # falls back (|mu| / eps is huge): GRPO's singleton rule decides.
    r, lengths, mask = [[0.6, 0.2]], [[2, 3]], [[True, False]]
    np.testing.assert_array_equal(apply(hapo(), r, lengths, 4, mask), 0)
    np.testing.assert_array_equal(
        apply(hapo(fallback_check="code"), r, lengths, 4, mask), 0)
    raw = apply(hapo(fallback_check="code", singleton="raw"), r, lengths, 4,
                mask)
    np.testing.assert_allclose(raw[0, 0, :2], 0.6 / (1 + 1e-6), rtol=1e-6)
    # All equal with a large offset: exactly 0, no spurious fallback.
    adv = apply(hapo(), [[1e4 + 0.3] * 4], [[1, 2, 3, 4]], 4)
    np.testing.assert_array_equal(adv, 0)
    # No valid token in the whole group.
    adv = apply(hapo(fallback_check="code"), [[1.0, 0.0]], [[0, 0]], 3)
    np.testing.assert_array_equal(adv, 0)

  def test_bad_input_names_the_argument(self):
    r = np.zeros((2, 3), np.float32)
    with self.assertRaisesRegex(ValueError, "hapo: fallback_check must be "
                                r"one of \('valid', 'code'\)"):
      hapo(fallback_check="padded")
    with self.assertRaisesRegex(A.MissingContextError, "token_mask_BxGxT"):
      hapo().update(r, A.EmptyState())
    with self.assertRaisesRegex(TypeError, "token_mask_BxGxT must be a "
                                "boolean"):
      hapo().update(r, A.EmptyState(),
                    token_mask_BxGxT=np.ones((2, 3, 4), np.float32))
    with self.assertRaisesRegex(ValueError, r"hapo: token_mask_BxGxT must "
                                r"have shape \[B, G, T\]"):
      hapo().update(r, A.EmptyState(),
                    token_mask_BxGxT=np.ones((2, 4, 4), bool))
    with self.assertRaisesRegex(ValueError, "fallback_threshold must be >= 0"):
      hapo(fallback_threshold=-1.0)


if __name__ == "__main__":
  absltest.main()
