"""PVPO (arXiv 2508.21104): the per-prompt static anchor table over steps."""

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
from jaxrl_group.advantages._est_pvpo import pvpo
from jaxrl_group.advantages._est_pvpo import PvpoState

NAN = np.nan
R = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
IDS = np.array([2, 5, 7], np.int32)
# Step 0: anchors 0.5 (id 2) and 0.75 (id 5); no reference rewards for id 7.
REF0 = np.array([[0.5, 0.5, 0, 1], [1, 1, 1, 0], [NAN] * 4], np.float32)
# Step 1: new estimates 0 (id 2), 1 (id 5), 1 (id 7, one valid reward).
REF1 = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, NAN, NAN, NAN]], np.float32)
# Step 2: new estimates 0.25, 0.5, 0.
REF2 = np.array([[0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]], np.float32)


def run_steps(tx, refs, r=R, ids=IDS, mask=None, jit=False):
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(r)
  outs = []
  for ref in refs:
    adv, state = update(r, state, mask_BxG=mask, prompt_ids_B=ids,
                        ref_rewards_BxG=ref)
    outs.append(np.asarray(adv))
  return outs, state


class PvpoTest(parameterized.TestCase):

  def test_static_anchor_over_three_steps(self):
    outs, state = run_steps(pvpo(table_size=8), [REF0, REF1, REF2])
    # Step 0: A = r - 0.5 for id 2; r - 0.75 = 0.25 for the all-equal id 5
    # group (PVPO's point: not 0); id 7 has no anchor yet: fallback to the
    # group mean, 0.
    np.testing.assert_allclose(outs[0], [[0.5, -0.5, 0.5, -0.5], [0.25] * 4,
                                         [0.0] * 4])
    # Steps 1, 2: the anchors of ids 2 and 5 stay (static V); id 7 gets its
    # first estimate 1.0 at step 1 and keeps it: A = 0 - 1 = -1.
    for out in outs[1:]:
      np.testing.assert_allclose(out, [[0.5, -0.5, 0.5, -0.5], [0.25] * 4,
                                       [-1.0] * 4])
    self.assertIsInstance(state, PvpoState)
    expected = np.zeros(8, np.float32)
    expected[[2, 5, 7]] = [0.5, 0.75, 1.0]
    np.testing.assert_allclose(state.value, expected)
    written = np.full(8, -1)
    written[[2, 5, 7]] = [0, 0, 1]
    np.testing.assert_array_equal(state.written_at, written)
    self.assertEqual(int(state.count), 3)

  def test_refresh_every_two_steps(self):
    outs, state = run_steps(pvpo(table_size=8, refresh_every=2),
                            [REF0, REF1, REF2], jit=True)
    # Step 1: entries of step 0 are 1 update old: kept. Step 2: 2 old:
    # refreshed to 0.25 and 0.5; id 7 (written at 1) is kept at 1.0.
    np.testing.assert_allclose(outs[1][:2], [[0.5, -0.5, 0.5, -0.5],
                                             [0.25] * 4])
    np.testing.assert_allclose(outs[2], [[0.75, -0.25, 0.75, -0.25],
                                         [0.5] * 4, [-1.0] * 4])
    np.testing.assert_array_equal(np.asarray(state.written_at)[[2, 5, 7]],
                                  [2, 2, 1])

  def test_refresh_every_step_follows_reference(self):
    outs, _ = run_steps(pvpo(table_size=8, refresh_every=1), [REF0, REF1])
    np.testing.assert_allclose(outs[1], [[1, 0, 1, 0], [0] * 4, [-1] * 4])

  def test_duplicate_ids_pool_their_reference_rewards(self):
    r = np.array([[1, 0], [0, 0]], np.float32)
    ref = np.array([[1, 1], [0, NAN]], np.float32)
    tx = pvpo(table_size=4)
    adv, state = tx.update(r, tx.init(r), prompt_ids_B=np.array([3, 3]),
                           ref_rewards_BxG=ref)
    # Pooled mean (1 + 1 + 0) / 3 = 2/3 for both rows.
    np.testing.assert_allclose(adv, r - 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(state.value[3], 2 / 3, rtol=1e-6)

  def test_ids_outside_the_table_are_not_stored(self):
    r = np.array([[1, 0], [1, 1], [1, 0]], np.float32)
    ref = np.array([[0.5, 0.5], [0, 1], [NAN, NAN]], np.float32)
    tx = pvpo(table_size=4)
    adv, state = tx.update(r, tx.init(r), prompt_ids_B=np.array([-1, 4, 9]),
                           ref_rewards_BxG=ref)
    # Own reference means 0.5 and 0.5; the third row has none: group mean.
    np.testing.assert_allclose(adv, [[0.5, -0.5], [0.5, 0.5], [0.5, -0.5]])
    np.testing.assert_array_equal(state.written_at, -1)

  def test_fallback_zero_and_m_reference_samples(self):
    r = np.array([[1, 0, 0], [1, 1, 0]], np.float32)
    ref_bxm = np.array([[0.0, 1.0], [NAN, NAN]], np.float32)  # M = 2
    tx = pvpo(table_size=4, fallback="zero")
    adv, _ = tx.update(r, tx.init(r), prompt_ids_B=np.array([0, 1]),
                       ref_rewards_BxM=ref_bxm)
    np.testing.assert_allclose(adv, [[0.5, -0.5, -0.5], [1, 1, 0]])

  def test_masked_samples_and_padded_prompts(self):
    mask = np.ones((3, 4), bool)
    mask[0, 3] = False
    mask[2] = False  # a padded prompt row: does not write its id
    outs, state = run_steps(pvpo(table_size=8), [REF1], mask=mask)
    np.testing.assert_allclose(outs[0], [[1, 0, 1, 0], [0] * 4, [0] * 4])
    self.assertEqual(int(state.written_at[7]), -1)

  def test_eval_shape_init_and_float64(self):
    tx = pvpo(table_size=16)
    spec = jax.ShapeDtypeStruct((3, 4), jnp.float32)
    abstract = jax.eval_shape(tx.init, spec)
    self.assertIsInstance(abstract, PvpoState)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, tx.init(R))
    self.assertEqual(abstract.value.shape, (16,))
    self.assertEqual(abstract.count.shape, ())
    with jax.enable_x64(True):
      state = tx.init(R.astype(np.float64))
      self.assertEqual(state.value.dtype, jnp.float64)

  def test_jit_over_steps_without_recompiling(self):
    tx = pvpo(table_size=8, refresh_every=2)
    traces = []

    def f(r, state, ref):
      traces.append(1)
      return tx.update(r, state, prompt_ids_B=IDS, ref_rewards_BxG=ref)

    jf = jax.jit(f)
    state = tx.init(R)
    eager_state = state
    for ref in (REF0, REF1, REF2):
      adv, state = jf(R, state, ref)
      eager, eager_state = tx.update(R, eager_state, prompt_ids_B=IDS,
                                     ref_rewards_BxG=ref)
      np.testing.assert_allclose(adv, eager)
    chex.assert_trees_all_close(state, eager_state)
    self.assertLen(traces, 1)

  def test_orbax_round_trip(self):
    tx = pvpo(table_size=8, refresh_every=2)
    _, state = run_steps(tx, [REF0, REF1])
    path = os.path.join(tempfile.mkdtemp(), "pvpo_state")
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, state)
      ckptr.wait_until_finished()
      restored = ckptr.restore(path, jax.eval_shape(tx.init, R))
    self.assertIsInstance(restored, PvpoState)
    chex.assert_trees_all_equal(restored, state)
    a1, s1 = tx.update(R, state, prompt_ids_B=IDS, ref_rewards_BxG=REF2)
    a2, s2 = tx.update(R, restored, prompt_ids_B=IDS, ref_rewards_BxG=REF2)
    np.testing.assert_array_equal(a1, a2)
    chex.assert_trees_all_equal(s1, s2)

  def test_inject_hyperparams_refresh_every(self):
    tx = A.inject_hyperparams(pvpo, static_args=("table_size",))(
        table_size=8, refresh_every=5)
    state = tx.init(R)
    update = jax.jit(tx.update)
    _, state = update(R, state, prompt_ids_B=IDS, ref_rewards_BxG=REF0)
    state = state._replace(hyperparams={"refresh_every": jnp.int32(1)})
    adv, _ = update(R, state, prompt_ids_B=IDS, ref_rewards_BxG=REF1)
    np.testing.assert_allclose(adv[0], [1, 0, 1, 0])

  @parameterized.named_parameters(("eager", False), ("jit", True))
  def test_bad_input_names_the_argument(self, jit):
    tx = pvpo(table_size=8)
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(R)
    with self.assertRaisesRegex(A.MissingContextError, "prompt_ids_B"):
      update(R, state, ref_rewards_BxG=REF0)
    with self.assertRaisesRegex(A.MissingContextError, "ref_rewards_BxG"):
      update(R, state, prompt_ids_B=IDS)
    with self.assertRaisesRegex(TypeError, "prompt_ids_B must be an integer"):
      update(R, state, prompt_ids_B=IDS.astype(np.float32),
             ref_rewards_BxG=REF0)
    with self.assertRaisesRegex(ValueError, r"pvpo: prompt_ids_B must have "
                                r"shape \[B\] = \(3,\)"):
      update(R, state, prompt_ids_B=IDS[:2], ref_rewards_BxG=REF0)
    with self.assertRaisesRegex(ValueError, "ref_rewards_BxM must have shape"):
      update(R, state, prompt_ids_B=IDS, ref_rewards_BxM=REF0[:2])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "table_size must be a positive"):
      pvpo(table_size=0)
    with self.assertRaisesRegex(ValueError, "table_size must be a positive"):
      pvpo(table_size=2.5)
    with self.assertRaisesRegex(ValueError, "fallback must be one of"):
      pvpo(fallback="mean")
    with self.assertRaisesRegex(ValueError, "refresh_every must be >= 0"):
      pvpo(refresh_every=-1)
    with self.assertRaisesRegex(TypeError, "static_args"):
      jax.jit(lambda n: pvpo(table_size=n).init(R))(8)


if __name__ == "__main__":
  absltest.main()
