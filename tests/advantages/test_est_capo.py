"""CAPO (arXiv 2512.02580): positive-only phase, step counter, checkpoints."""

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
from jaxrl_group.advantages._est_capo import capo
from jaxrl_group.advantages._est_capo import CapoState

ADV = np.array([[1.5, -0.5, 0.0, -1.0],
                [-0.2, 0.4, 2.0, -3.0]], np.float32)
POS = np.array([[1.5, 0.0, 0.0, 0.0],
                [0.0, 0.4, 2.0, 0.0]], np.float32)


def steps(tx, values, n, mask=None, **ctx):
  state = tx.init(values)
  outs = []
  for _ in range(n):
    adv, state = tx.update(values, state, mask_BxG=mask, **ctx)
    outs.append(np.asarray(adv))
  return outs, state


class CapoTest(parameterized.TestCase):

  def test_state_evolution_hard_switch(self):
    # total 8, fraction 0.25: switch at 2, so updates 0 and 1 keep only the
    # positive advantages and updates 2, 3 pass everything through.
    outs, state = steps(capo(total_steps=8, positive_fraction=0.25), ADV, 4)
    np.testing.assert_array_equal(outs[0], POS)
    np.testing.assert_array_equal(outs[1], POS)
    np.testing.assert_array_equal(outs[2], ADV)
    np.testing.assert_array_equal(outs[3], ADV)
    self.assertEqual(int(state.count), 4)
    self.assertEqual(state.count.dtype, jnp.int32)

  def test_count_advances_by_one_per_update(self):
    tx = capo(total_steps=10, positive_fraction=0.3)  # switch at 3
    state = tx.init(ADV)
    seen = []
    for _ in range(5):
      adv, state = jax.jit(tx.update)(ADV, state)
      seen.append((int(state.count), bool(np.all(np.asarray(adv) >= 0))))
    self.assertEqual(seen, [(1, True), (2, True), (3, True), (4, False),
                            (5, False)])

  def test_on_top_of_grpo_in_a_chain(self):
    # grpo([1, 0, 0, 0]) = [1.5, -0.5, -0.5, -0.5] (mean 0.25, std 0.5).
    tx = A.chain(A.grpo(eps=0.0), capo(total_steps=4, positive_fraction=0.5))
    r = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    outs, state = steps(tx, r, 3)
    np.testing.assert_allclose(outs[0], [[1.5, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(outs[1], [[1.5, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(outs[2], [[1.5, -0.5, -0.5, -0.5]], rtol=1e-6)
    self.assertEqual(int(state[1].count), 3)

  def test_mask_zeroes_and_ignores_padding(self):
    mask = np.array([[True, False, True, True], [False] * 4])
    outs, _ = steps(capo(total_steps=1, positive_fraction=0.0), ADV, 1, mask)
    np.testing.assert_array_equal(outs[0], [[1.5, 0.0, 0.0, -1.0],
                                            [0.0] * 4])

  def test_zero_fraction_is_identity(self):
    outs, _ = steps(capo(positive_fraction=0.0), ADV, 2)
    np.testing.assert_array_equal(outs[0], ADV)

  def test_ctx_step_overrides_the_counter(self):
    tx = capo(total_steps=10, positive_fraction=0.5)  # switch at 5
    state = tx.init(ADV)
    adv, state = jax.jit(tx.update)(ADV, state, step=jnp.int32(7))
    np.testing.assert_array_equal(adv, ADV)
    self.assertEqual(int(state.count), 1)
    adv, _ = tx.update(ADV, state, step=4)
    np.testing.assert_array_equal(adv, POS)

  def test_saturating_counter(self):
    tx = capo(total_steps=10)
    top = jnp.iinfo(jnp.int32).max
    _, state = tx.update(ADV, CapoState(count=jnp.int32(top)))
    self.assertEqual(int(state.count), top)

  def test_jitted_scan_over_steps(self):
    tx = capo(total_steps=6, positive_fraction=0.5)  # switch at 3

    def body(state, _):
      adv, state = tx.update(ADV, state)
      return state, jnp.sum(adv)

    state, sums = jax.jit(lambda s: jax.lax.scan(body, s, length=5))(
        tx.init(ADV))
    pos, full = POS.sum(), ADV.sum()
    np.testing.assert_allclose(sums, [pos, pos, pos, full, full], rtol=1e-6)
    self.assertEqual(int(state.count), 5)

  def test_traced_hyperparameters_do_not_recompile(self):
    tx = A.inject_hyperparams(capo)(total_steps=100, positive_fraction=0.25)
    state = tx.init(ADV)
    traces = []

    def f(values, state):
      traces.append(1)
      return tx.update(values, state)

    jf = jax.jit(f)
    adv, state = jf(ADV, state)
    np.testing.assert_array_equal(adv, POS)
    state = state._replace(hyperparams={**state.hyperparams,
                                        "positive_fraction": jnp.float32(0)})
    adv, state = jf(ADV, state)
    np.testing.assert_array_equal(adv, ADV)
    self.assertLen(traces, 1)
    self.assertEqual(int(state.inner_state.count), 2)

  def test_eval_shape_init(self):
    tx = capo()
    abstract = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((8, 4),
                                                           jnp.float32))
    self.assertIsInstance(abstract, CapoState)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, tx.init(ADV))
    self.assertEqual(abstract.count.shape, ())

  def test_orbax_round_trip(self):
    tx = capo(total_steps=8, positive_fraction=0.25)
    _, state = steps(tx, ADV, 3)
    path = os.path.join(tempfile.mkdtemp(), "capo_state")
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(path, state)
      ckpt.wait_until_finished()
      restored = ckpt.restore(path, jax.eval_shape(tx.init, ADV))
    self.assertIsInstance(restored, CapoState)
    chex.assert_trees_all_equal(restored, state)
    a1, s1 = tx.update(ADV, state)
    a2, s2 = tx.update(ADV, restored)
    np.testing.assert_array_equal(a1, a2)
    chex.assert_trees_all_equal(s1, s2)

  def test_registry(self):
    info = A.info("capo")
    self.assertTrue(info.stateful)
    self.assertEqual(info.input_name, "adv_BxG")
    outs, _ = steps(A.get("capo", total_steps=4, positive_fraction=0.5),
                    ADV, 1)
    np.testing.assert_array_equal(outs[0], POS)

  @parameterized.named_parameters(("eager", False), ("jit", True))
  def test_bad_input_names_the_argument(self, jit):
    tx = capo()
    update = jax.jit(tx.update) if jit else tx.update
    with self.assertRaisesRegex(ValueError, r"capo: adv_BxG must have rank 2"):
      update(np.zeros(4, np.float32), tx.init(ADV))
    with self.assertRaisesRegex(TypeError, "capo: adv_BxG must be a floating"):
      update(np.zeros((2, 4), np.int32), tx.init(ADV))
    with self.assertRaisesRegex(ValueError, "capo: step must be a scalar"):
      update(ADV, tx.init(ADV), step=np.zeros(3, np.int32))

  def test_bad_hyperparameters(self):
    with self.assertRaisesRegex(ValueError, "positive_fraction must be >= 0"):
      capo(positive_fraction=-0.1)
    with self.assertRaisesRegex(ValueError, "total_steps must be >= 0"):
      capo(total_steps=-5)


if __name__ == "__main__":
  absltest.main()
