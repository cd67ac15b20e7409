"""chain and named_chain: order, state structure, ctx pass-through."""

from absl.testing import absltest
import jax
import numpy as np

from jaxrl_group import advantages as A


def counting(scale_by):
  """A stateful test transform: multiplies and counts its calls."""

  def init_fn(rewards_BxG):
    del rewards_BxG
    return np.zeros([], np.int32)

  def update_fn(values, state, *, mask_BxG=None, **ctx):
    del mask_BxG
    bonus = ctx.get("bonus", 0.0)
    return values * scale_by + bonus, state + 1

  return A.AdvantageTransform(init_fn, update_fn)


class ChainTest(absltest.TestCase):

  def test_order_and_tuple_state(self):
    r = np.ones((2, 3), np.float32)
    tx = A.chain(counting(2.0), A.clip(max_abs=1.5))
    state = tx.init(r)
    self.assertIsInstance(state, tuple)
    self.assertLen(state, 2)
    adv, state = tx.update(r, state)
    np.testing.assert_array_equal(adv, 1.5)  # 2 then clipped, not 1 * 2
    self.assertEqual(int(state[0]), 1)
    self.assertIsInstance(state[1], A.EmptyState)

  def test_ctx_reaches_all_and_unknown_keys_are_ignored(self):
    r = np.ones((2, 3), np.float32)
    tx = A.chain(counting(1.0), A.grpo(), counting(1.0))
    adv, _ = tx.update(r, tx.init(r), bonus=0.5, something_else=3)
    # bonus added before grpo (all-equal -> 0) and after it.
    np.testing.assert_array_equal(adv, 0.5)

  def test_mask_reaches_all(self):
    r = np.array([[1.0, 0.0, 7.0]], np.float32)
    mask = np.array([[True, True, False]])
    adv, _ = A.chain(A.center(), A.scale(eps=0.0)).update(
        r, (A.EmptyState(), A.EmptyState()), mask_BxG=mask)
    np.testing.assert_allclose(adv, [[2 ** -.5, -(2 ** -.5), 0.0]],
                               rtol=1e-6)

  def test_rejects_non_transforms(self):
    with self.assertRaisesRegex(TypeError, "AdvantageTransform"):
      A.chain(A.grpo(), A.grpo)


class NamedChainTest(absltest.TestCase):

  def test_dict_state_readable(self):
    r = np.ones((2, 3), np.float32)
    tx = A.named_chain(("count", counting(1.0)), ("center", A.center()))
    state = tx.init(r)
    self.assertEqual(set(state), {"count", "center"})
    _, state = jax.jit(tx.update)(r, state)
    self.assertEqual(int(state["count"]), 1)

  def test_same_values_as_chain(self):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 5)).astype(np.float32)
    a, _ = A.chain(A.center(), A.scale()).update(
        r, (A.EmptyState(), A.EmptyState()))
    tx = A.named_chain(("center", A.center()), ("scale", A.scale()))
    b, _ = tx.update(r, tx.init(r))
    np.testing.assert_array_equal(a, b)

  def test_duplicate_names_rejected(self):
    with self.assertRaisesRegex(ValueError, "duplicate name 'a'"):
      A.named_chain(("a", A.center()), ("a", A.scale()))

  def test_bad_pairs_rejected(self):
    with self.assertRaisesRegex(TypeError, "pair"):
      A.named_chain(A.center())

  def test_state_key_mismatch(self):
    tx = A.named_chain(("a", A.center()))
    with self.assertRaisesRegex(ValueError, "state keys"):
      tx.update(np.ones((1, 2), np.float32), {"b": A.EmptyState()})


if __name__ == "__main__":
  absltest.main()
