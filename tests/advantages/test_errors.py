"""Bad input: clear errors naming the argument, raised at trace time."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from tests.advantages import inputs
from tests.advantages.test_invariants import build
from tests.advantages.test_invariants import NAMES

MODES = (("eager", False), ("jit", True))


def call(tx, r, jit, **kw):
  f = jax.jit(tx.update) if jit else tx.update
  return f(r, tx.init(r), **kw)


class BadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(*MODES)
  def test_wrong_rank(self, jit):
    with self.assertRaisesRegex(ValueError, r"grpo: rewards_BxG must have "
                                r"rank 2 \(shape \[B, G\]\), got shape \(8,\)"):
      call(A.grpo(), np.zeros(8, np.float32), jit)

  @parameterized.named_parameters(*MODES)
  def test_wrong_mask_shape(self, jit):
    with self.assertRaisesRegex(ValueError, r"mask_BxG must have shape "
                                r"\[B, G\] = \(2, 4\), got \(2, 3\)"):
      call(A.grpo(), np.zeros((2, 4), np.float32), jit,
           mask_BxG=np.ones((2, 3), bool))

  @parameterized.named_parameters(*MODES)
  def test_wrong_dtypes(self, jit):
    with self.assertRaisesRegex(TypeError, "rewards_BxG must be a floating"):
      call(A.grpo(), np.zeros((2, 4), np.int32), jit)
    with self.assertRaisesRegex(TypeError, "mask_BxG must be a boolean"):
      call(A.grpo(), np.zeros((2, 4), np.float32), jit,
           mask_BxG=np.ones((2, 4), np.float32))

  @parameterized.named_parameters(*MODES)
  def test_group_too_small(self, jit):
    with self.assertRaisesRegex(ValueError, r"rloo needs a group size G >= 2,"
                                r" got G = 1"):
      call(A.rloo(), np.zeros((4, 1), np.float32), jit)

  @parameterized.named_parameters(*MODES)
  def test_wrong_ctx_shape(self, jit):
    with self.assertRaisesRegex(ValueError, r"opo: lengths_BxG must have "
                                r"shape \[B, G\] = \(2, 4\), got \(2, 5\)"):
      call(A.opo(), np.zeros((2, 4), np.float32), jit,
           lengths_BxG=np.ones((2, 5)))

  @parameterized.named_parameters(
      (n, n) for n in NAMES if A.INFO[n].requires)
  def test_missing_required_ctx_names_the_key(self, name):
    rng = np.random.default_rng(0)
    r = inputs.make_rewards(name, rng)
    ctx = inputs.make_ctx(name, rng)
    for key in A.INFO[name].requires:
      partial = {k: v for k, v in ctx.items() if k != key}
      if name == "opo" and key == "lengths_BxG":
        partial.pop("token_mask_BxGxT", None)
      with self.assertRaisesRegex(A.MissingContextError, key):
        jax.jit(build(name).update)(r, build(name).init(r), **partial)

  @parameterized.named_parameters(
      (n, n) for n in NAMES if A.INFO[n].min_group_size > 1)
  def test_min_group_size_is_enforced(self, name):
    rng = np.random.default_rng(1)
    g = A.INFO[name].min_group_size - 1
    r = inputs.make_rewards(name, rng, g=g)
    ctx = inputs.make_ctx(name, rng, g=g)
    with self.assertRaisesRegex(ValueError, f"{name} needs a group size"):
      build(name).update(r, build(name).init(r), **ctx)

  def test_bad_conventions(self):
    with self.assertRaisesRegex(ValueError, r"grpo: std must be one of "
                                r"\('unbiased', 'population'\), got 'bessel'"):
      A.grpo(std="bessel")
    with self.assertRaisesRegex(ValueError, "eps_placement"):
      A.grpo(eps_placement="denominator")
    with self.assertRaisesRegex(ValueError, "singleton"):
      A.rloo(singleton="nan")
    with self.assertRaisesRegex(ValueError, "eps must be >= 0"):
      A.grpo(eps=-1.0)
    with self.assertRaisesRegex(ValueError, "level"):
      A.scale(level="token")

  def test_gdpo_weights_length(self):
    r = np.zeros((2, 3, 2), np.float32)
    with self.assertRaisesRegex(ValueError, r"weights_K must have shape \[K\]"):
      A.gdpo(weights=(1.0, 2.0, 3.0)).update(r, A.EmptyState())

  def test_token_values_need_token_mask(self):
    with self.assertRaisesRegex(A.MissingContextError, "token_mask_BxGxT"):
      A.batch_whiten().update(jnp.zeros((2, 3, 4)), A.EmptyState())


class RegistryTest(absltest.TestCase):

  def test_unknown_name_lists_known_names(self):
    with self.assertRaisesRegex(ValueError, "unknown advantage estimator "
                                "'grpoo'; known names: .*grpo, grpo_passk"):
      A.get("grpoo")
    with self.assertRaisesRegex(ValueError, "known names"):
      A.info("nope")

  def test_bad_kwargs_name_the_estimator(self):
    with self.assertRaisesRegex(TypeError, "advantage estimator 'grpo'"):
      A.get("grpo", epsilon=1e-6)

  def test_presets(self):
    with self.assertRaisesRegex(ValueError, "unknown preset 'torch'"):
      A.get("grpo", preset="torch")
    with self.assertRaisesRegex(ValueError, "preset 'trl' has no conventions "
                                "for 'gae'"):
      A.get("gae", preset="trl")
    for preset, table in A.PRESETS.items():
      for name, kwargs in table.items():
        self.assertIn(name, A.REGISTRY, f"{preset}: {name}")
        A.get(name, preset=preset)
        A.REGISTRY[name](**kwargs)

  def test_baseline_names_registered(self):
    expected = {
        "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline",
        "remax", "opo", "gpg", "grpo_passk", "optimal_token_baseline",
        "batch_std", "gdpo", "gae", "center", "scale", "batch_whiten", "clip"}
    self.assertContainsSubset(expected, set(A.REGISTRY))
    for name in A.REGISTRY:
      doc = A.REGISTRY[name].__doc__ or ""
      self.assertNotEmpty(doc.strip(), name)

  def test_register_a_new_estimator(self):
    @A.register("_test_negate")
    def negate() -> A.AdvantageTransform:
      """Negates the rewards (a test estimator)."""
      return A.stateless(lambda r, *, mask_BxG=None, **ctx: -r)

    try:
      adv, _ = A.get("_test_negate").update(np.ones((1, 2)), A.EmptyState())
      np.testing.assert_array_equal(adv, -1)
      with self.assertRaisesRegex(ValueError, "already registered"):
        A.register("_test_negate")(negate)
    finally:
      del A.REGISTRY["_test_negate"], A.INFO["_test_negate"]

  def test_required_ctx_keys_are_documented(self):
    for name, info in A.INFO.items():
      for key in info.requires:
        self.assertIn(key, A.CONTEXT_KEYS, name)


if __name__ == "__main__":
  absltest.main()
