"""One test per known pitfall of peer implementations (reference/losses.md §9).

The rows of single estimators (QAE, EDGE-GRPO, DCPO, CANON, HAPO) are tested
in their own test files; those that need the sampler or step-level
estimators (AAPO's reference samples, GiGPO, HGPO, MARS) come with them.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages as A
from jaxrl_group import losses as L


def adv_of(tx, r, mask=None, **ctx):
  r = jnp.asarray(r, jnp.float32)
  return np.asarray(tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0])


class AdvantagePitfallsTest(parameterized.TestCase):
  """§9.1."""

  def test_vectorized_grpo_low_variance_groups(self):
    # verl#6348: a variance floor plus E[x^2] - E[x]^2 in float32 shrank
    # groups with std < 1e-3 (0.6196 became 0.0050).
    r = np.float32(50.0) + np.float32(2e-4) * np.array(
        [[0.0, 1.0, 2.0, 3.0]], np.float32)
    rd = r.astype(np.float64)
    ref = (rd - rd.mean()) / (rd.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(adv_of(A.grpo(), r), ref, rtol=2e-2)

  def test_no_std_flag_changes_the_output(self):
    # verl#7893: the vectorized path ignored norm_adv_by_std_in_grpo.
    r = [[1.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(adv_of(A.grpo(norm_by_std=False), r),
                               [[0.75, -0.25, -0.25, -0.25]])
    self.assertFalse(np.allclose(adv_of(A.grpo(), r),
                                 adv_of(A.grpo(norm_by_std=False), r)))

  def test_eps_reaches_the_computation(self):
    # verl's grpo dispatch never received epsilon.
    r = [[0.0, 1e-4]]
    self.assertNotAlmostEqual(float(adv_of(A.grpo(eps=1e-6), r)[0, 1]),
                              float(adv_of(A.grpo(eps=1e-2), r)[0, 1]),
                              places=3)

  @parameterized.named_parameters(("zero", "zero", 0.0),
                                  ("raw", "raw", 2.0))
  def test_one_singleton_convention_for_rloo(self, policy, expected):
    # verl rloo gave the raw reward, rloo_vectorized gave 0.
    adv = adv_of(A.rloo(singleton=policy), [[2.0, 9.0]], [[True, False]])
    self.assertEqual(float(adv[0, 0]), expected)

  def test_float32_singleton_stays_finite_and_bounded(self):
    # NeMo-RL#4161: a float32 residue amplified a singleton ~4000x.
    r = np.array([[0.1, 0.2, 0.3]], np.float32)
    adv = adv_of(A.grpo(singleton="raw"), r, [[True, False, False]])
    np.testing.assert_allclose(adv[0, 0], 0.1, rtol=1e-5)

  def test_reinforce_pp_baseline_with_singletons_is_not_all_zero(self):
    # rllm#917: with n = 1 every advantage became 0.
    tm = np.ones((4, 2, 3), bool)
    mask = np.array([[True, False]] * 4)
    r = np.array([[1.0, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    adv = adv_of(A.reinforce_pp_baseline(singleton="raw"), r, mask,
                 token_mask_BxGxT=tm)
    self.assertGreater(np.abs(adv).max(), 0.5)

  def test_rows_need_not_be_contiguous(self):
    # MAPO assumed contiguous groups; group_by does not.
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.repeat(np.arange(3), 4)).astype(np.int32)
    r = rng.normal(size=12).astype(np.float32)
    g = A.group_by(ids, r, max_group_size=4, num_groups=3)
    adv = A.ungroup(adv_of(A.grpo(), g.arrays[0], g.mask_BxG), g)
    for i in range(3):
      v = r[ids == i]
      np.testing.assert_allclose(adv[ids == i],
                                 (v - v.mean()) / (v.std(ddof=1) + 1e-6),
                                 rtol=1e-5)

  @parameterized.named_parameters(("pro", "pro"), ("air", "air"))
  def test_mapo_does_not_assume_contiguous_groups(self, variant):
    # WenkeHuang/MAPO built weights from dict order plus repeat_interleave.
    rng = np.random.default_rng(2)
    r_BxG = rng.choice([0.0, 0.1, 0.9, 1.0], size=(4, 6)).astype(np.float32)
    tx = A.mapo(variant=variant)
    ref_N = adv_of(tx, r_BxG).reshape(-1)
    ids = np.repeat(np.arange(4), 6).astype(np.int32)
    perm = rng.permutation(24)
    g = A.group_by(ids[perm], r_BxG.reshape(-1)[perm], max_group_size=6,
                   num_groups=4)
    out = A.ungroup(adv_of(tx, g.arrays[0], g.mask_BxG), g)
    np.testing.assert_allclose(out, ref_N[perm], rtol=1e-5, atol=1e-6)

  def test_hapo_entropy_scale_ignores_padding(self):
    # HAPO's fallback check included padded positions.
    rng = np.random.default_rng(1)
    ent = rng.uniform(0.1, 2.0, (2, 3, 4)).astype(np.float32)
    mask = np.ones((2, 3, 4), bool)
    mask[..., 3] = False
    h1 = L.hapo_entropy_scale(ent, mask)
    ent2 = ent.copy()
    ent2[..., 3] = 1e6
    h2 = L.hapo_entropy_scale(ent2, mask)
    np.testing.assert_allclose(np.asarray(h1)[mask], np.asarray(h2)[mask],
                               rtol=1e-6)


class AggregationPitfallsTest(absltest.TestCase):
  """§9.2."""

  def test_default_aggregation_is_pinned(self):
    # TRL's documented default was BNPO while the docs said otherwise.
    self.assertEqual(L.DEFAULTS["aggregation"], "seq_mean_token_mean")
    self.assertEqual(L.DEFAULTS["surrogate"], "ppo_clip")

  def test_dr_grpo_norm_does_not_scale_with_micro_batch_size(self):
    # verl#3741: seq-mean-token-sum-norm scaled with the micro-batch size.
    loss = np.ones((4, 2, 3), np.float32)
    mask = np.ones((4, 2, 3), bool)
    full = L.aggregate(loss, mask, "seq_mean_token_sum_norm",
                       norm_constant=3.0)
    halves = L.combine(*(L.aggregate(loss[i:i + 2], mask[i:i + 2],
                                     "seq_mean_token_sum_norm",
                                     norm_constant=3.0) for i in (0, 2)))
    self.assertEqual(float(full.value), 1.0)
    self.assertEqual(float(halves.value), 1.0)

  def test_zero_variance_detection_is_per_group_under_batch_scaling(self):
    # TRL#6365/#6368: is_std_zero was batch-level under scale_rewards=batch.
    adv = adv_of(A.batch_std(), [[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(adv[0], 0.0)
    self.assertGreater(abs(adv[1, 0]), 0.0)

  def test_forced_aggregation_is_an_error_not_an_override(self):
    # verl silently forced seq-mean-token-mean for gspo / sapo / gmpo.
    for name, mode in L.FIXED_AGGREGATION.items():
      other = "token_mean" if mode != "token_mean" else "seq_mean_token_sum"
      with self.assertRaisesRegex(ValueError, "fixes the aggregation"):
        L.make_objective({"surrogate": name, "aggregation": other})

  def test_cispo_cap_conventions_are_separate_parameters(self):
    # epsilon_high: relative bound in PPO, absolute cap in TRL's cispo.
    self.assertEqual(set(L.CISPO_CONVENTIONS), {"verl", "trl"})


class KlPitfallsTest(absltest.TestCase):
  """§9.3."""

  def test_every_advertised_kl_estimator_runs(self):
    # verl#6058: every '+' estimator raised NotImplementedError.
    lp = jnp.array([[[-1.0, -2.0]]])
    ref = jnp.array([[[-1.5, -1.0]]])
    for name in L.KL_ESTIMATORS + tuple(L.KL_ALIASES):
      v = L.kl_estimate(lp, ref, estimator=name)
      self.assertTrue(np.isfinite(np.asarray(v)).all(), name)

  def test_kl_gradient_flows_in_zero_advantage_groups(self):
    # TRL#7068: decided here: yes, as verl and TRL do; mask to exclude.
    lp = jnp.array([[[-1.0, -2.0]]])
    ref = jnp.array([[[-1.5, -1.0]]])
    mask = jnp.ones((1, 1, 2), bool)
    x = L.LossInputs(lp, lp, jnp.zeros((1, 1)), mask, ref_logp_BxGxT=ref)
    objective = L.make_objective({"kl_coef": 0.1})
    grad = jax.grad(
        lambda l: objective(x._replace(logp_BxGxT=l))[0].value)(lp)
    self.assertGreater(float(jnp.abs(grad).max()), 0.0)

  def test_extreme_log_ratios_stay_finite(self):
    # verl clamps k3; TRL does not. Both options exist and stay finite here.
    lp = jnp.array([[[-80.0, 0.0]]])
    ref = jnp.array([[[0.0, -80.0]]])
    v = L.kl_estimate(lp, ref, estimator="k3")
    self.assertTrue(np.isfinite(np.asarray(v)).all())

  def test_negative_rewards_keep_the_sign(self):
    # TRL#5026: scale_rewards="mean" inverted the sign for a negative mean.
    adv = adv_of(A.grpo(), [[-3.0, -1.0, -2.0]])
    self.assertGreater(float(adv[0, 1]), 0.0)
    self.assertLess(float(adv[0, 0]), 0.0)


class DispatchPitfallsTest(absltest.TestCase):
  """§9.4."""

  def test_otb_runs_through_the_registry_with_its_context(self):
    # verl#5615: OTB was unusable from the trainer's dispatcher.
    rng = np.random.default_rng(0)
    tm = np.ones((2, 2, 3), bool)
    tx = A.get("optimal_token_baseline")
    ctx = {k: (tm if k == "token_mask_BxGxT" else
               -rng.uniform(0.1, 1, (2, 2, 3)).astype(np.float32))
           for k in A.info("optimal_token_baseline").requires}
    adv = adv_of(tx, [[1.0, 0.0], [0.0, 1.0]], **ctx)
    self.assertEqual(adv.shape, (2, 2, 3))

  def test_a_config_field_that_does_nothing_fails(self):
    with self.assertRaisesRegex(ValueError, "unknown config keys"):
      L.make_objective({"filter_groups": True})


if __name__ == "__main__":
  absltest.main()
