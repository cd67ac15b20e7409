"""Golden values and state evolution for dcpo (DCPO, arXiv 2601.12730)."""

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
from jaxrl_group.advantages._est_dcpo import dcpo
from jaxrl_group.advantages._est_dcpo import DcpoState

T = 3


def ctx_for(logp_1, logp_t, tm=None):
  logp_1 = np.asarray(logp_1, np.float32)
  if tm is None:
    tm = np.ones(logp_1.shape, bool)
  return dict(token_mask_BxGxT=tm, old_logp_BxGxT=logp_1,
              logp_temp_BxGxT=np.asarray(logp_t, np.float32))


def const(value, b=1, g=4):
  return np.full((b, g, T), value, np.float32)


class DcpoTest(parameterized.TestCase):

  def test_first_step_by_hand(self):
    # r = [1, 0, 0, 0]; GRPO: mean 1/4, unbiased std 1/2 ->
    # [1.5, -0.5, -0.5, -0.5] (times 0.5 / (0.5 + 1e-6)).
    # h_prev = 0 (init), h_base = 0.5: m = min(0.5, 0.1) = 0.1; q = 1/4;
    # the authors' a = 0.1 / 0.25 = 0.4, alpha = 0.4 / 1.4 = 2/7.
    # e = 0.6 / 0.5 = 1.2 on the correct sample's tokens.
    # A^_0 = (5/7) 1.5 + (2/7) 1.2 = 1.4142857; A^_j = (5/7)(-0.5) = -0.3571429.
    tx = dcpo()
    r = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    state = tx.init(r)
    self.assertAlmostEqual(float(state.temperature), 1.2, places=6)
    adv, state = tx.update(r, state, **ctx_for(const(np.log(0.5)),
                                               const(np.log(0.6))))
    g = 0.5 / (0.5 + 1e-6)
    want = np.empty((1, 4, T))
    want[0, 0] = 5 / 7 * 1.5 * g + 2 / 7 * 1.2
    want[0, 1:] = 5 / 7 * -0.5 * g
    np.testing.assert_allclose(adv, want, rtol=1e-5)
    np.testing.assert_allclose(
        want[0, :, 0], [1.4142857, -0.3571429, -0.3571429, -0.3571429],
        rtol=1e-5)
    # New entropy -mean(log 0.5) = 0.6931472 > 0.5 -> next temperature 0.8.
    self.assertEqual(int(state.count), 1)
    np.testing.assert_allclose(state.h_prev, 0.6931472, rtol=1e-6)
    np.testing.assert_allclose(state.temperature, 0.8, rtol=1e-6)
    np.testing.assert_allclose(state.alpha, 2 / 7, rtol=1e-6)

  def test_three_steps_of_state(self):
    tx = dcpo()
    update = jax.jit(tx.update)
    r = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], np.float32)
    state = tx.init(r)
    # Step 1: h_prev 0 -> m = 0.1; q = 3/8 -> alpha = 0.1 / 0.475 = 0.2105263.
    # Batch entropy -log 0.5 = 0.6931472 -> temperature 0.8.
    _, state = update(r, state, **ctx_for(const(np.log(0.5), 2),
                                          const(np.log(0.5), 2)))
    np.testing.assert_allclose(
        [state.h_prev, state.temperature, state.alpha],
        [0.6931472, 0.8, 0.2105263], rtol=1e-6)
    # Step 2: h_prev 0.6931 -> m = min(0.1931, 0.1) = 0.1, alpha as above.
    # Batch entropy 0.45 <= 0.5 -> temperature 1.2.
    _, state = update(r, state, **ctx_for(const(-0.45, 2), const(-0.45, 2)))
    np.testing.assert_allclose(
        [state.h_prev, state.temperature, state.alpha],
        [0.45, 1.2, 0.2105263], rtol=1e-6)
    # Step 3: h_prev 0.45 -> m = 0.05; q = 1/2 (r1) -> alpha = 0.05 / 0.55
    # = 0.0909091. e = exp(-0.3 + 0.45) = exp(0.15) = 1.1618342.
    r1 = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], np.float32)
    adv, state = update(r1, state, **ctx_for(const(-0.45, 2),
                                             const(-0.3, 2)))
    alpha = 0.05 / 0.55
    np.testing.assert_allclose(state.alpha, 0.0909091, rtol=1e-5)
    np.testing.assert_allclose(state.count, 3)
    # GRPO of [1, 1, 0, 0]: mean 1/2, std sqrt(1/3) -> +-0.8660254.
    a = 0.5 / (np.sqrt(1 / 3) + 1e-6)
    np.testing.assert_allclose(adv[0, 0, 0],
                               (1 - alpha) * a + alpha * 1.1618342, rtol=1e-5)
    np.testing.assert_allclose(adv[0, 2, 0], -(1 - alpha) * a, rtol=1e-5)

  @parameterized.parameters("limit", "grpo")
  def test_zero_accuracy_batch_is_finite(self, zero_accuracy):
    tx = dcpo(zero_accuracy=zero_accuracy)
    # All wrong (binary): GRPO is 0 and b = 0, so everything is 0.
    r = np.zeros((2, 4), np.float32)
    adv, state = tx.update(r, tx.init(r), **ctx_for(const(-1.0, 2),
                                                    const(-0.5, 2)))
    np.testing.assert_array_equal(adv, 0)
    # "limit": alpha -> m / (m + 0) = 1; "grpo": alpha = 0.
    self.assertEqual(float(state.alpha), 1.0 if zero_accuracy == "limit"
                     else 0.0)
    # Partial scores, all below 0.05: GRPO is not 0.
    r = np.array([[0.01, 0.03, 0.0, 0.02]], np.float32)
    adv, _ = tx.update(r, tx.init(r), **ctx_for(const(-1.0), const(-0.5)))
    self.assertTrue(np.isfinite(adv).all())
    if zero_accuracy == "limit":
      np.testing.assert_array_equal(adv, 0)
    else:
      grpo = np.asarray(A.grpo().update(r, A.EmptyState())[0])
      np.testing.assert_allclose(adv, np.repeat(grpo[..., None], T, -1),
                                 rtol=1e-6)

  def test_zero_accuracy_and_zero_entropy_gap(self):
    # h_prev = h_base and q = 0: 0 / 0 -> alpha = 0, plain GRPO.
    tx = dcpo(h_init=0.5)
    r = np.array([[0.01, 0.03, 0.0, 0.02]], np.float32)
    adv, state = tx.update(r, tx.init(r), **ctx_for(const(-1.0),
                                                    const(-0.5)))
    self.assertEqual(float(state.alpha), 0.0)
    grpo = np.asarray(A.grpo().update(r, A.EmptyState())[0])
    np.testing.assert_allclose(adv[..., 0], grpo, rtol=1e-6)

  def test_invalid_tokens_and_samples(self):
    # Padded tokens with -inf log-probs and a masked sample: 0 there, no NaN;
    # they do not enter q or the entropy.
    tm = np.ones((1, 4, T), bool)
    tm[0, 1, 1:] = False
    logp_1 = const(np.log(0.5))
    logp_1[~tm] = -np.inf
    logp_t = const(np.log(0.6))
    logp_t[~tm] = -np.inf
    r = np.array([[1.0, 0.0, 0.0, 7.0]], np.float32)
    mask = np.array([[True, True, True, False]])
    tx = dcpo()
    adv, state = tx.update(r, tx.init(r), mask_BxG=mask,
                           **ctx_for(logp_1, logp_t, tm))
    adv = np.asarray(adv)
    self.assertTrue(np.isfinite(adv).all())
    np.testing.assert_array_equal(adv[0, 1, 1:], 0)
    np.testing.assert_array_equal(adv[0, 3], 0)
    # q = 1/3, m = 0.1 -> alpha = 0.1 / (0.1 + 1/3) = 0.2307692.
    np.testing.assert_allclose(state.alpha, 0.2307692, rtol=1e-6)
    np.testing.assert_allclose(state.h_prev, -np.log(0.5), rtol=1e-6)

  def test_log_ratio_clamp_keeps_e_finite(self):
    r = np.array([[1.0, 0.0]], np.float32)
    tx = dcpo()
    adv, _ = tx.update(r, tx.init(r), **ctx_for(const(-200.0, 1, 2),
                                                const(0.0, 1, 2)))
    self.assertTrue(np.isfinite(adv).all())
    # alpha = 0.1 / (0.1 + 0.5) = 1/6; e = exp(20).
    np.testing.assert_allclose(adv[0, 0, 0],
                               5 / 6 * 0.7071058 + np.exp(20.0) / 6,
                               rtol=1e-5)

  def test_update_entropy_false_keeps_the_state(self):
    tx = dcpo(update_entropy=False, h_init=0.7)
    r = np.array([[1.0, 0.0]], np.float32)
    state = tx.init(r)
    np.testing.assert_allclose(state.temperature, 0.8, rtol=1e-6)
    _, new = tx.update(r, state, **ctx_for(const(-3.0, 1, 2),
                                           const(-3.0, 1, 2)))
    np.testing.assert_allclose(new.h_prev, 0.7, rtol=1e-6)
    np.testing.assert_allclose(new.temperature, 0.8, rtol=1e-6)
    self.assertEqual(int(new.count), 1)

  def test_traced_hyperparameters(self):
    r = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    ctx = ctx_for(const(np.log(0.5)), const(np.log(0.6)))
    tx = A.inject_hyperparams(dcpo)(h_base=0.3, alpha_cap=0.2)
    got, _ = jax.jit(tx.update)(r, tx.init(r), **ctx)
    plain = dcpo(h_base=0.3, alpha_cap=0.2)
    want, _ = plain.update(r, plain.init(r), **ctx)
    np.testing.assert_allclose(got, want, rtol=1e-6)

  def test_abstract_init_and_dtypes(self):
    tx = dcpo()
    spec = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    abstract = jax.eval_shape(tx.init, spec)
    concrete = tx.init(jnp.zeros((4, 8), jnp.float32))
    self.assertIsInstance(abstract, DcpoState)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, concrete)
    self.assertEqual(concrete.count.dtype, jnp.int32)
    with jax.enable_x64(True):
      self.assertEqual(tx.init(np.zeros((2, 2))).h_prev.dtype, jnp.float64)

  def test_orbax_round_trip(self):
    tx = dcpo()
    r = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    _, state = tx.update(r, tx.init(r), **ctx_for(const(np.log(0.5)),
                                                  const(np.log(0.6))))
    path = os.path.join(tempfile.mkdtemp(), "dcpo")
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, state)
      ckptr.wait_until_finished()
      restored = ckptr.restore(path, jax.eval_shape(tx.init, r))
    self.assertIsInstance(restored, DcpoState)
    chex.assert_trees_all_equal(restored, state)

  def test_bad_input_names_the_argument(self):
    r = np.zeros((1, 4), np.float32)
    tx = dcpo()
    ctx = ctx_for(const(-1.0), const(-1.0))
    with self.assertRaisesRegex(ValueError, "dcpo: zero_accuracy must be "
                                "one of"):
      dcpo(zero_accuracy="nan")
    partial = {k: v for k, v in ctx.items() if k != "logp_temp_BxGxT"}
    with self.assertRaisesRegex(A.MissingContextError, "logp_temp_BxGxT"):
      tx.update(r, tx.init(r), **partial)
    with self.assertRaisesRegex(ValueError, r"dcpo: logp_temp_BxGxT must "
                                r"have shape \[B, G, T\]"):
      tx.update(r, tx.init(r), **{**ctx, "logp_temp_BxGxT": const(0.0, 1, 3)})
    with self.assertRaisesRegex(TypeError, "old_logp_BxGxT must be a "
                                "floating"):
      tx.update(r, tx.init(r), **{**ctx, "old_logp_BxGxT":
                                  np.zeros((1, 4, T), np.int32)})
    with self.assertRaisesRegex(ValueError, "alpha_cap must be >= 0"):
      dcpo(alpha_cap=-0.1)


if __name__ == "__main__":
  absltest.main()
