"""inject_hyperparams: float hyperparameters in state, schedules, no recompiles."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A

R = np.array([[1.0, 1.0 + 1e-4, 1.0, 1.0 - 1e-4], [0, 1, 0, 0]], np.float32)


class InjectTest(absltest.TestCase):

  def test_same_values_as_plain_factory(self):
    tx = A.inject_hyperparams(A.grpo)(eps=1e-4, std="population")
    adv, state = tx.update(R, tx.init(R))
    ref, _ = A.grpo(eps=1e-4, std="population").update(R, A.EmptyState())
    np.testing.assert_allclose(adv, ref, rtol=1e-6)
    self.assertEqual(set(state.hyperparams), {"eps"})
    self.assertEqual(state.hyperparams["eps"].dtype, jnp.float32)
    self.assertEqual(int(state.count), 1)

  def test_changing_a_hyperparameter_does_not_recompile(self):
    tx = A.inject_hyperparams(A.grpo)(eps=1e-6)
    traces = []

    def f(r, state):
      traces.append(1)
      return tx.update(r, state)

    jf = jax.jit(f)
    state = tx.init(R)
    a, state = jf(R, state)
    state = state._replace(hyperparams={"eps": jnp.float32(1e-2)})
    b, state = jf(R, state)
    self.assertLen(traces, 1)
    ref, _ = A.grpo(eps=1e-2).update(R, A.EmptyState())
    np.testing.assert_allclose(b, ref, rtol=1e-6)
    self.assertGreater(float(jnp.abs(a - b).max()), 1e-2)

  def test_schedule_of_the_count(self):
    tx = A.inject_hyperparams(A.clip)(max_abs=lambda n: 0.5 + n)
    r = np.full((1, 2), 10.0, np.float32)
    state = tx.init(r)
    outs = []
    for _ in range(3):
      adv, state = jax.jit(tx.update)(r, state)
      outs.append(float(adv[0, 0]))
    self.assertEqual(outs, [0.5, 1.5, 2.5])
    self.assertEqual(float(state.hyperparams["max_abs"]), 2.5)

  def test_static_args_and_strings_stay_static(self):
    tx = A.inject_hyperparams(A.grpo, static_args=("eps",))(
        eps=1e-4, singleton="raw", norm_by_std=True)
    state = tx.init(R)
    self.assertEqual(state.hyperparams, {})

  def test_bad_arguments_fail_at_construction(self):
    with self.assertRaisesRegex(ValueError, "std"):
      A.inject_hyperparams(A.grpo)(std="bessel")

  def test_eval_shape_init(self):
    tx = A.inject_hyperparams(A.grpo)(eps=1e-6)
    abstract = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((2, 4),
                                                            jnp.float32))
    self.assertEqual(abstract.hyperparams["eps"].shape, ())
    self.assertEqual(abstract.count.dtype, jnp.int32)


if __name__ == "__main__":
  absltest.main()
