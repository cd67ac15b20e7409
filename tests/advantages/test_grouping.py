"""group_by / ungroup: shuffled, variable-size groups, jitted round trips."""

from absl.testing import absltest
import jax
import numpy as np

from jaxrl_group import advantages as A


def shuffled_rows(rng, sizes):
  ids = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
  perm = rng.permutation(len(ids))
  return ids[perm], perm


class GroupByTest(absltest.TestCase):

  def test_round_trip_shuffled_variable_sizes(self):
    rng = np.random.default_rng(0)
    sizes = [3, 1, 5, 2, 4]
    ids, _ = shuffled_rows(rng, sizes)
    x = rng.normal(size=len(ids)).astype(np.float32)
    y = rng.normal(size=(len(ids), 3)).astype(np.float32)
    g = A.group_by(ids, x, y, max_group_size=6, num_groups=5)
    x_bg, y_bg = g.arrays
    self.assertEqual(x_bg.shape, (5, 6))
    self.assertEqual(y_bg.shape, (5, 6, 3))
    np.testing.assert_array_equal(g.mask_BxG.sum(1), sizes)
    np.testing.assert_array_equal(A.ungroup(x_bg, g), x)
    np.testing.assert_array_equal(A.ungroup(y_bg, g), y)
    self.assertEqual(int(g.grouping.num_dropped), 0)
    # Each group holds exactly its rows, in their original relative order.
    for b in range(5):
      np.testing.assert_array_equal(x_bg[b][: sizes[b]], x[ids == b])
      np.testing.assert_array_equal(x_bg[b][sizes[b]:], 0)

  def test_jitted_estimator_on_flat_rows_matches_per_group_loop(self):
    rng = np.random.default_rng(1)
    sizes = [4, 2, 6, 3, 1, 5, 6, 2]
    ids, _ = shuffled_rows(rng, sizes)
    r = rng.binomial(1, 0.4, len(ids)).astype(np.float32)

    @jax.jit
    def flat_grpo(ids, r):
      g = A.group_by(ids, r, max_group_size=6, num_groups=8)
      adv, _ = A.grpo().update(g.arrays[0], A.EmptyState(),
                               mask_BxG=g.mask_BxG)
      return A.ungroup(adv, g)

    adv = np.asarray(flat_grpo(ids, r))
    for b, n in enumerate(sizes):
      vals = r[ids == b]
      ref = (0 * vals if n == 1 else
             (vals - vals.mean()) / (vals.std(ddof=1) + 1e-6))
      np.testing.assert_allclose(adv[ids == b], ref, rtol=1e-5, atol=1e-6)

  def test_permuting_rows_permutes_output(self):
    # The MAPO pitfall: results must not depend on rows being contiguous.
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(4), 4).astype(np.int32)
    r = rng.normal(size=16).astype(np.float32)

    def f(ids, r):
      g = A.group_by(ids, r, max_group_size=4, num_groups=4)
      return A.ungroup(A.rloo().update(g.arrays[0], A.EmptyState(),
                                       mask_BxG=g.mask_BxG)[0], g)

    perm = rng.permutation(16)
    np.testing.assert_allclose(np.asarray(f(ids, r))[perm],
                               f(ids[perm], r[perm]), rtol=1e-6)

  def test_wide_layout_uses_the_stable_sort_path(self):
    # (num_groups + 1) * N >= 2**31: the packed int32 sort key would
    # overflow, so group_by takes the two-operand stable sort instead.
    rng = np.random.default_rng(3)
    n, b = 65536, 32768
    ids = rng.permutation(np.repeat(np.arange(b), 2)).astype(np.int32)
    x = np.arange(n, dtype=np.float32)
    self.assertGreaterEqual((b + 1) * n, 2**31)
    g = A.group_by(ids, x, max_group_size=2, num_groups=b)
    np.testing.assert_array_equal(A.ungroup(g.arrays[0], g), x)
    first = np.array([np.flatnonzero(ids == i)[0] for i in range(5)])
    np.testing.assert_array_equal(g.arrays[0][:5, 0], x[first])

  def test_factorize_string_ids(self):
    codes, uniques = A.factorize(["u2", "u1", "u2", "u3", "u1"])
    np.testing.assert_array_equal(codes, [1, 0, 1, 2, 0])
    self.assertEqual(list(uniques), ["u1", "u2", "u3"])

  def test_num_groups_inferred_when_concrete(self):
    g = A.group_by(np.array([1, 0, 1], np.int32), np.ones(3), max_group_size=2)
    self.assertEqual(g.mask_BxG.shape, (2, 2))

  def test_errors(self):
    ids = np.array([0, 0, 0, 1], np.int32)
    with self.assertRaisesRegex(ValueError, "group 0 has 3 rows but "
                                "max_group_size is 2"):
      A.group_by(ids, np.ones(4), max_group_size=2)
    with self.assertRaisesRegex(ValueError, r"group_ids_N must lie in \[0, 2\)"):
      A.group_by(np.array([0, 2], np.int32), np.ones(2), max_group_size=2,
                 num_groups=2)
    with self.assertRaisesRegex(TypeError, "group_ids_N must be an integer"):
      A.group_by(np.array([0.0, 1.0]), np.ones(2), max_group_size=2)
    with self.assertRaisesRegex(ValueError, r"arrays_N\[0\]"):
      A.group_by(ids, np.ones(3), max_group_size=4)
    with self.assertRaisesRegex(ValueError, "pass num_groups"):
      jax.jit(lambda i: A.group_by(i, max_group_size=4).mask_BxG)(ids)

  def test_overflow_under_jit_is_counted_not_silent(self):
    ids = np.array([0, 0, 0, 1, 5], np.int32)
    x = np.arange(5, dtype=np.float32)

    @jax.jit
    def f(ids, x):
      g = A.group_by(ids, x, max_group_size=2, num_groups=2)
      return g.grouping.num_dropped, A.ungroup(g.arrays[0], g, fill_value=-1)

    dropped, back = f(ids, x)
    self.assertEqual(int(dropped), 2)  # third row of group 0, and id 5
    np.testing.assert_array_equal(back, [0, 1, -1, 3, -1])


if __name__ == "__main__":
  absltest.main()
