"""make_objective: the full objective from a config, checked before tracing."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrl_group import losses as L


def batch(seed=0, b=4, g=3, t=5):
  rng = np.random.default_rng(seed)
  shape = (b, g, t)
  logp = np.log(rng.uniform(0.05, 1.0, shape)).astype(np.float32)
  old = (logp + 0.1 * rng.normal(size=shape)).astype(np.float32)
  ref = (logp + 0.2 * rng.normal(size=shape)).astype(np.float32)
  ent = rng.uniform(0.1, 2.0, shape).astype(np.float32)
  adv = rng.normal(size=(b, g)).astype(np.float32)
  lengths = rng.integers(0, t + 1, size=(b, g))
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  return L.LossInputs(logp, old, adv, mask, ref_logp_BxGxT=ref,
                      entropy_BxGxT=ent)


class ComposerTest(parameterized.TestCase):

  def test_default_is_ppo_clip_seq_mean_token_mean(self):
    x = batch()
    loss, metrics = L.make_objective()(x)
    tok, _ = L.ppo_clip(x.logp_BxGxT, x.old_logp_BxGxT, x.adv, x.mask_BxGxT)
    ref = L.aggregate(tok, x.mask_BxGxT, "seq_mean_token_mean")
    np.testing.assert_allclose(loss.value, ref.value, rtol=1e-6)
    self.assertIn("clipfrac_high", metrics)
    self.assertIn("entropy", metrics)

  def test_kl_and_entropy_terms_share_the_weight(self):
    x = batch(1)
    cfg = {"aggregation": "token_mean", "kl_coef": 0.04,
           "kl_estimator": "k3", "entropy_coef": 0.01,
           "surrogate_kwargs": {"eps_high": 0.28}}
    loss, metrics = L.make_objective(cfg)(x)
    m = x.mask_BxGxT
    tok, _ = L.ppo_clip(x.logp_BxGxT, x.old_logp_BxGxT, x.adv, m,
                        eps_high=0.28)
    kl = L.kl_estimate(x.logp_BxGxT, x.ref_logp_BxGxT, estimator="k3")
    expected = (tok + 0.04 * kl - 0.01 * x.entropy_BxGxT)[m].mean()
    np.testing.assert_allclose(loss.value, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl"].value, kl[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["policy_loss"].value + metrics["kl_loss"].value
        + metrics["entropy_loss"].value, loss.value, rtol=1e-5)

  @parameterized.named_parameters(
      (a, a) for a in L.AGGREGATIONS)
  def test_micro_batches_give_the_full_batch_gradient(self, mode):
    x = batch(2, b=8)
    cfg = ml_collections.ConfigDict({
        "aggregation": mode, "norm_constant": 5.0, "kl_coef": 0.1,
        "entropy_coef": 0.01})
    objective = L.make_objective(cfg)

    def total(logp, part):
      return objective(part._replace(logp_BxGxT=logp))[0].total

    full_loss, _ = objective(x)
    full_grad = jax.grad(
        lambda lp: objective(x._replace(logp_BxGxT=lp))[0].value)(
            x.logp_BxGxT)
    parts = [jax.tree.map(lambda a, i=i: a[i:i + 2], x) for i in (0, 2, 4, 6)]
    weight = sum(objective(p)[0].weight for p in parts)
    grads = np.concatenate([jax.grad(total)(p.logp_BxGxT, p) for p in parts])
    np.testing.assert_allclose(
        sum(objective(p)[0].total for p in parts) / weight, full_loss.value,
        rtol=1e-5)
    np.testing.assert_allclose(grads / weight, full_grad, rtol=1e-5,
                               atol=1e-8)

  def test_rollout_correction_weights_scale_the_policy_term(self):
    x = batch(3)
    w = np.full(x.mask_BxGxT.shape, 0.5, np.float32)
    objective = L.make_objective({"aggregation": "token_mean"})
    plain, _ = objective(x)
    weighted, _ = objective(x._replace(is_weights_BxGxT=w))
    np.testing.assert_allclose(weighted.value, 0.5 * plain.value, rtol=1e-6)

  def test_jit(self):
    x = batch(4)
    objective = L.make_objective({"kl_coef": 0.1})
    np.testing.assert_allclose(jax.jit(objective)(x)[0].value,
                               objective(x)[0].value, rtol=1e-6)

  def test_surrogate_with_a_key(self):
    x = batch(5)._replace(key=jax.random.key(0))
    loss, _ = L.make_objective({"surrogate": "clip_cov"})(x)
    self.assertTrue(np.isfinite(loss.value))


class ComposerErrorsTest(absltest.TestCase):

  def test_unknown_key(self):
    with self.assertRaisesRegex(ValueError, r"unknown config keys \['beta'\]"):
      L.make_objective({"beta": 0.04})

  def test_unknown_surrogate_lists_known(self):
    with self.assertRaisesRegex(ValueError, "unknown surrogate 'ppo'; known: "
                                ".*ppo_clip"):
      L.make_objective({"surrogate": "ppo"})

  def test_unknown_surrogate_option_lists_options(self):
    with self.assertRaisesRegex(ValueError, r"no options \['epsilon'\].*"
                                "eps_high"):
      L.make_objective({"surrogate_kwargs": {"epsilon": 0.2}})

  def test_fixed_aggregation_is_never_overridden_silently(self):
    with self.assertRaisesRegex(ValueError, "surrogate 'gmpo' fixes the "
                                "aggregation to 'seq_mean_token_mean'"):
      L.make_objective({"surrogate": "gmpo", "aggregation": "token_mean"})
    L.make_objective({"surrogate": "gmpo",
                      "aggregation": "seq_mean_token_mean"})

  def test_bad_aggregation_and_norm_constant(self):
    with self.assertRaisesRegex(ValueError, "aggregation must be one of"):
      L.make_objective({"aggregation": "token-mean"})
    with self.assertRaisesRegex(ValueError, "needs norm_constant"):
      L.make_objective({"aggregation": "seq_mean_token_sum_norm"})

  def test_kl_estimator_and_missing_inputs(self):
    with self.assertRaisesRegex(ValueError, "unknown estimator 'k4'"):
      L.make_objective({"kl_coef": 0.1, "kl_estimator": "k4"})
    x = batch()
    with self.assertRaisesRegex(ValueError, "ref_logp_BxGxT is None"):
      L.make_objective({"kl_coef": 0.1})(x._replace(ref_logp_BxGxT=None))
    with self.assertRaisesRegex(ValueError, "entropy_BxGxT is None"):
      L.make_objective({"entropy_coef": 0.1})(x._replace(entropy_BxGxT=None))


if __name__ == "__main__":
  absltest.main()
