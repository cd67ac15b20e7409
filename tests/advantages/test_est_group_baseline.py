"""Golden values for group_baseline (AdvEvo-MARL, arXiv 2510.01586)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_group_baseline import group_baseline


def apply(tx, r, ids, mask=None):
  r = np.asarray(r, np.float32)
  if mask is not None:
    mask = np.asarray(mask, bool)
  ids = np.asarray(ids, np.int32)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask,
                              role_ids_BxG=ids)[0])


def np_group_baseline(r, ids, mask, *, norm_by_std=False, eps=1e-6):
  out = np.zeros(r.shape)
  for b in range(r.shape[0]):
    for role in np.unique(ids[b][mask[b]]):
      sel = mask[b] & (ids[b] == role)
      x = r[b][sel].astype(np.float64)
      if len(x) < 2:
        continue
      a = x - x.mean()
      if norm_by_std:
        a = a / (x.std(ddof=1) + eps)
      out[b][sel] = a
  return out


class GroupBaselineTest(parameterized.TestCase):

  def test_hand_values(self):
    # Roles [0, 0, 1, 1], R = [1, 3, 10, 20]: b_0 = 2, b_1 = 15.
    adv = apply(group_baseline(), [[1.0, 3.0, 10.0, 20.0]], [[0, 0, 1, 1]])
    np.testing.assert_allclose(adv, [[-1.0, 1.0, -5.0, 5.0]], rtol=1e-6)
    # With the std (unbiased): sqrt(2) and sqrt(50), so every entry is
    # +-1/sqrt(2) = +-0.7071068 (less a 1e-6 relative eps effect).
    adv = apply(group_baseline(norm_by_std=True), [[1.0, 3.0, 10.0, 20.0]],
                [[0, 0, 1, 1]])
    np.testing.assert_allclose(adv, [[-0.7071063, 0.7071063, -0.7071067,
                                      0.7071067]], rtol=1e-6)

  def test_players_by_rollouts_layout(self):
    # Three players x two rollouts, G = 6 (player-major). Players 0 and 1
    # are attackers (role 0), player 2 the defender (role 1).
    # R = p0: [1, 3], p1: [5, 7], p2: [2, 4]; b_attack = 16/4 = 4,
    # b_defend = 3 -> A = [-3, -1, 1, 3, -1, 1].
    r = np.array([[1.0, 3.0], [5.0, 7.0], [2.0, 4.0]]).reshape(1, 6)
    roles = np.repeat([0, 0, 1], 2)[None]
    np.testing.assert_allclose(apply(group_baseline(), r, roles),
                               [[-3.0, -1.0, 1.0, 3.0, -1.0, 1.0]])

  def test_rows_are_independent_and_ids_arbitrary(self):
    r = [[1.0, 3.0, 10.0, 20.0], [0.0, 4.0, 1.0, 1.0]]
    ids = [[7, 7, -2, -2], [-2, 5, -2, 5]]
    # Row 1: role -2 = {0, 1} -> mean 0.5; role 5 = {4, 1} -> mean 2.5.
    np.testing.assert_allclose(
        apply(group_baseline(), r, ids),
        [[-1.0, 1.0, -5.0, 5.0], [-0.5, 1.5, 0.5, -1.5]], rtol=1e-6)

  def test_singleton_roles_and_mask(self):
    r, ids = [[5.0, 1.0, 2.0, 3.0]], [[0, 1, 1, 1]]
    np.testing.assert_allclose(apply(group_baseline(), r, ids),
                               [[0.0, -1.0, 0.0, 1.0]])
    np.testing.assert_allclose(apply(group_baseline(singleton="raw"), r,
                                     ids), [[5.0, -1.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        apply(group_baseline(singleton="raw", norm_by_std=True), r, ids)[0, 0],
        5.0 / (1 + 1e-6), rtol=1e-7)
    # A masked member is not in the baseline (and its reward may be huge);
    # role 1 is then a singleton.
    adv = apply(group_baseline(), [[1.0, 3.0, 1e6, 7.0]], [[0, 0, 0, 1]],
                [[True, True, False, True]])
    np.testing.assert_allclose(adv, [[-1.0, 1.0, 0.0, 0.0]])

  def test_one_role_is_dr_grpo_and_grpo(self):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(6, 5)).astype(np.float32)
    mask = rng.random((6, 5)) < 0.8
    ids = np.zeros((6, 5), np.int32)
    np.testing.assert_allclose(apply(group_baseline(), r, ids, mask),
                               np.asarray(A.dr_grpo().update(
                                   r, A.EmptyState(), mask_BxG=mask)[0]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        apply(group_baseline(norm_by_std=True), r, ids, mask),
        np.asarray(A.grpo().update(r, A.EmptyState(), mask_BxG=mask)[0]),
        rtol=1e-5, atol=1e-6)

  @parameterized.parameters(False, True)
  def test_matches_numpy_loop(self, norm_by_std):
    rng = np.random.default_rng(1)
    r = (rng.normal(size=(10, 12)) + 100).astype(np.float32)
    ids = rng.integers(0, 4, (10, 12)).astype(np.int32)
    mask = rng.random((10, 12)) < 0.8
    got = apply(group_baseline(norm_by_std=norm_by_std), r, ids, mask)
    np.testing.assert_allclose(
        got, np_group_baseline(r, ids, mask, norm_by_std=norm_by_std),
        rtol=1e-4, atol=1e-4)

  def test_jit(self):
    tx = group_baseline()
    r = np.array([[1.0, 3.0, 10.0, 20.0]], np.float32)
    ids = np.array([[0, 0, 1, 1]], np.int32)
    got, _ = jax.jit(tx.update)(r, tx.init(r), role_ids_BxG=ids)
    np.testing.assert_allclose(got, [[-1.0, 1.0, -5.0, 5.0]])

  def test_bad_input_names_the_argument(self):
    r = np.zeros((2, 3), np.float32)
    tx = group_baseline()
    with self.assertRaisesRegex(A.MissingContextError, "role_ids_BxG"):
      tx.update(r, tx.init(r))
    with self.assertRaisesRegex(TypeError, "role_ids_BxG must be an integer"):
      tx.update(r, tx.init(r), role_ids_BxG=np.zeros((2, 3), np.float32))
    with self.assertRaisesRegex(ValueError, r"group_baseline: role_ids_BxG "
                                r"must have shape \[B, G\]"):
      tx.update(r, tx.init(r), role_ids_BxG=np.zeros((2, 4), np.int32))
    with self.assertRaisesRegex(ValueError, "group_baseline: singleton"):
      group_baseline(singleton="nan")


if __name__ == "__main__":
  absltest.main()
