"""State evolution and golden values for group_robust (§2.25 [reading])."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxrl_group import advantages as A
from jaxrl_group.advantages._est_group_robust import group_robust
from jaxrl_group.advantages._est_group_robust import GroupRobustState


def grpo(r, mask=None):
  return np.asarray(A.grpo().update(np.asarray(r, np.float32),
                                    A.EmptyState(), mask_BxG=mask)[0])


def np_group_robust(r, ids, mask, alpha, eta, k, mode="eg"):
  """One step, float64, by plain loops over groups."""
  loss = np.zeros(k)
  n = np.zeros(k)
  for g in range(k):
    sel = mask & (ids == g)
    n[g] = sel.sum()
    if n[g]:
      loss[g] = -r[sel].mean()
  present = n > 0
  new = alpha.copy()
  if mode == "eg":
    w = alpha * np.exp(eta * loss)
    new[present] = w[present] / w[present].sum() * alpha[present].sum()
  else:
    worst = np.argmax(np.where(present, loss, -np.inf))
    new = (np.arange(k) == worst).astype(float)
  weight = np.where(mask, new[ids] / np.maximum(n[ids], 1) * n.sum(), 0)
  return weight * grpo(r, mask), new


class GroupRobustTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Row 0 is group 0 with rewards [1, 0] (mean 0.5, loss -0.5); row 1 is
    # group 1 with [0, 0.5] (mean 0.25, loss -0.25). GRPO of each row is
    # +-1/sqrt(2) (less the eps effect).
    self.r = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)
    self.ids = np.array([[0, 0], [1, 1]], np.int32)

  def test_three_steps_of_exponentiated_gradient(self):
    tx = group_robust(step_size=1.0)
    update = jax.jit(tx.update)
    state = tx.init(self.r)
    np.testing.assert_allclose(state.weights_K, [0.5, 0.5])
    g = grpo(self.r)
    # Step 1: alpha ~ 0.5 [e^-0.5, e^-0.25] -> alpha_1 = 1 / (1 + e^-0.25)
    # = 0.5621765, alpha_0 = 0.4378235. Weights N alpha / n = 4 alpha / 2:
    # [0.8756470, 1.1243530].
    adv, state = update(self.r, state, subgroup_ids_BxG=self.ids)
    np.testing.assert_allclose(state.weights_K, [0.4378235, 0.5621765],
                               rtol=1e-6)
    np.testing.assert_allclose(state.loss_K, [-0.5, -0.25])
    np.testing.assert_allclose(adv, g * [[0.8756470], [1.1243530]],
                               rtol=1e-6)
    # Step 2, same batch: alpha_1 = 1 / (1 + e^-0.5) = 0.6224593.
    adv, state = update(self.r, state, subgroup_ids_BxG=self.ids)
    np.testing.assert_allclose(state.weights_K, [0.3775407, 0.6224593],
                               rtol=1e-6)
    np.testing.assert_allclose(adv, g * [[0.7550813], [1.2449187]],
                               rtol=1e-6)
    # Step 3, group 1 absent (row 1 masked): alpha and its loss are kept;
    # the only group present gets N alpha_0 / n_0 = 2 * 0.3775407 / 2.
    mask = np.array([[True, True], [False, False]])
    adv, state = update(self.r, state, mask_BxG=mask,
                        subgroup_ids_BxG=self.ids)
    np.testing.assert_allclose(state.weights_K, [0.3775407, 0.6224593],
                               rtol=1e-6)
    np.testing.assert_allclose(state.loss_K, [-0.5, -0.25])
    np.testing.assert_allclose(adv[0], g[0] * 0.3775407, rtol=1e-6)
    np.testing.assert_array_equal(adv[1], 0)
    self.assertEqual(int(state.count), 3)

  def test_maxmin_puts_all_weight_on_the_worst_group(self):
    tx = group_robust(mode="maxmin")
    adv, state = tx.update(self.r, tx.init(self.r),
                           subgroup_ids_BxG=self.ids)
    np.testing.assert_allclose(state.weights_K, [0.0, 1.0])
    g = grpo(self.r)
    np.testing.assert_allclose(adv, [[0.0, 0.0], 2 * g[1]], rtol=1e-6)

  def test_uniform_weights_balanced_groups_give_grpo(self):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 6)).astype(np.float32)
    ids = np.tile([0, 1, 2], (4, 2)).astype(np.int32)
    tx = group_robust(num_groups=3, step_size=0.0)
    adv, state = tx.update(r, tx.init(r), subgroup_ids_BxG=ids)
    np.testing.assert_allclose(adv, grpo(r), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.weights_K, [1 / 3] * 3, rtol=1e-6)
    # weight_norm="none": alpha / n = (1/3) / 8.
    tx = group_robust(num_groups=3, step_size=0.0, weight_norm="none")
    adv, _ = tx.update(r, tx.init(r), subgroup_ids_BxG=ids)
    np.testing.assert_allclose(adv, grpo(r) / 24, rtol=1e-5, atol=1e-7)

  @parameterized.parameters("eg", "maxmin")
  def test_matches_numpy_over_steps(self, mode):
    rng = np.random.default_rng(1)
    k, eta = 3, 0.7
    tx = group_robust(num_groups=k, step_size=eta, mode=mode)
    update = jax.jit(tx.update)
    r0 = np.zeros((8, 5), np.float32)
    state = tx.init(r0)
    alpha = np.full(k, 1 / k)
    for step in range(4):
      r = rng.binomial(1, 0.5, (8, 5)).astype(np.float32)
      ids = rng.integers(0, k, (8, 5)).astype(np.int32)
      if step == 2:
        ids[ids == 1] = 2  # group 1 absent this step
      mask = rng.random((8, 5)) < 0.85
      adv, state = update(r, state, mask_BxG=mask, subgroup_ids_BxG=ids)
      want, alpha = np_group_robust(r, ids, mask, alpha, eta, k, mode)
      np.testing.assert_allclose(state.weights_K, alpha, rtol=1e-5)
      np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-6)
      self.assertAlmostEqual(float(jnp.sum(state.weights_K)), 1.0, places=5)

  def test_out_of_range_ids(self):
    tx = group_robust()
    ids = np.array([[0, 2], [1, 1]], np.int32)
    with self.assertRaisesRegex(ValueError, r"subgroup_ids_BxG must lie in "
                                r"\[0, 2\).*got \[2\]"):
      tx.update(self.r, tx.init(self.r), subgroup_ids_BxG=ids)
    # Masked entries may carry any id.
    mask = np.array([[True, False], [True, True]])
    adv, _ = tx.update(self.r, tx.init(self.r), mask_BxG=mask,
                       subgroup_ids_BxG=ids)
    self.assertEqual(float(adv[0, 1]), 0.0)
    # Under jit such an entry counts as masked.
    adv_jit, _ = jax.jit(tx.update)(self.r, tx.init(self.r),
                                    subgroup_ids_BxG=ids)
    np.testing.assert_allclose(adv_jit, adv, rtol=1e-6)

  def test_abstract_init_and_dtypes(self):
    tx = group_robust(num_groups=4)
    spec = jax.ShapeDtypeStruct((8, 4), jnp.float32)
    abstract = jax.eval_shape(tx.init, spec)
    concrete = tx.init(jnp.zeros((8, 4), jnp.float32))
    self.assertIsInstance(abstract, GroupRobustState)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, concrete)
    self.assertEqual(concrete.weights_K.shape, (4,))
    with jax.enable_x64(True):
      r = np.zeros((2, 2))
      state = tx.init(r)
      self.assertEqual(state.weights_K.dtype, jnp.float64)
      _, new = tx.update(r, state, subgroup_ids_BxG=np.zeros((2, 2), int))
      self.assertEqual(new.weights_K.dtype, jnp.float64)

  def test_orbax_round_trip(self):
    tx = group_robust(step_size=1.0)
    _, state = tx.update(self.r, tx.init(self.r), subgroup_ids_BxG=self.ids)
    path = os.path.join(tempfile.mkdtemp(), "group_robust")
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, state)
      ckptr.wait_until_finished()
      restored = ckptr.restore(path, jax.eval_shape(tx.init, self.r))
    self.assertIsInstance(restored, GroupRobustState)
    chex.assert_trees_all_equal(restored, state)

  def test_bad_input_names_the_argument(self):
    with self.assertRaisesRegex(ValueError, "group_robust: num_groups must "
                                "be a positive int"):
      group_robust(num_groups=0)
    with self.assertRaisesRegex(ValueError, "group_robust: mode must be one"):
      group_robust(mode="dro")
    with self.assertRaisesRegex(ValueError, "weight_norm must be one"):
      group_robust(weight_norm="sum")
    with self.assertRaisesRegex(ValueError, "step_size must be >= 0"):
      group_robust(step_size=-1.0)
    tx = group_robust()
    with self.assertRaisesRegex(A.MissingContextError, "subgroup_ids_BxG"):
      tx.update(self.r, tx.init(self.r))
    with self.assertRaisesRegex(TypeError, "subgroup_ids_BxG must be an "
                                "integer"):
      tx.update(self.r, tx.init(self.r),
                subgroup_ids_BxG=np.zeros((2, 2), np.float32))


if __name__ == "__main__":
  absltest.main()
