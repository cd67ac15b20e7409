"""The RL and SFT steps: every registered estimator plugs in and runs."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_group import advantages
from jaxrl_group import models
from jaxrl_group import tasks
from jaxrl_group.train import build as build_lib
from jaxrl_group.train import context as context_lib
from jaxrl_group.train import step as step_lib
from jaxrl_group.train.state import TrainState
from tests.train import common


def _state(exp, params, optimizer, adv_tx, b, ref=False):
  spec = jax.ShapeDtypeStruct((b, exp.sampler.group_size), jnp.float32)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=optimizer.init(params),
      adv_state=advantages.EmptyState() if adv_tx is None
      else adv_tx.init(spec),
      key=jax.random.key(3), ref_params=params if ref else None)


def _rl_step(c, exp):
  return build_lib.make_rl_step(c, exp)


# Estimators with a required option.
REQUIRED_KWARGS = {"clip": "max_abs=5.0"}


class EveryEstimatorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (n, n) for n in sorted(advantages.REGISTRY))
  def test_one_step(self, name):
    c = common.tiny_config(**{"advantage.name": name,
                              "advantage.kwargs": REQUIRED_KWARGS.get(
                                  name, "")})
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    b = c.rl.prompts_per_step
    state = _state(exp, params, exp.rl_optimizer, exp.adv_tx, b,
                   ref=exp.needs_ref_params)
    batch = exp.task.sample(jax.random.key(1), b)
    new, metrics = jax.jit(_rl_step(c, exp))(state, batch)
    self.assertEqual(int(new.step), 1)
    for k, v in metrics.items():
      self.assertTrue(np.isfinite(v), f"{name}: metric {k} = {v}")
    self.assertTrue(all(np.all(np.isfinite(x))
                        for x in jax.tree.leaves(new.params)))
    self.assertEqual(jax.tree.structure(new.adv_state),
                     jax.tree.structure(state.adv_state))


class StepTest(parameterized.TestCase):

  def test_rl_step_learns_and_is_deterministic(self):
    c = common.tiny_config()
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    b = c.rl.prompts_per_step
    state = _state(exp, params, exp.rl_optimizer, exp.adv_tx, b)
    batch = exp.task.sample(jax.random.key(1), b)
    step = jax.jit(_rl_step(c, exp))
    s1, m1 = step(state, batch)
    s2, m2 = step(state, batch)
    jax.tree.map(np.testing.assert_array_equal, m1, m2)
    jax.tree.map(np.testing.assert_array_equal, s1.params, s2.params)
    # A random policy never answers: zero rewards, zero advantages, and a
    # zero policy gradient.
    self.assertEqual(float(m1["reward"]), 0.0)
    self.assertEqual(float(m1["grad_norm"]), 0.0)
    self.assertIn("policy_loss", m1)

  def test_scan_of_steps_equals_single_steps(self):
    c = common.tiny_config()
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    b = c.rl.prompts_per_step
    state = _state(exp, params, exp.rl_optimizer, exp.adv_tx, b)
    fn = step_lib.with_batches(_rl_step(c, exp),
                               lambda k: exp.task.sample(k, b))
    single = jax.jit(fn)
    s, rows = state, []
    for _ in range(3):
      s, m = single(s)
      rows.append(m)
    s3, ms = jax.jit(step_lib.on_device_steps(fn, 3))(state)
    for i, row in enumerate(rows):
      for k in row:
        np.testing.assert_allclose(ms[k][i], row[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    self.assertEqual(int(s3.step), 3)

  def test_ppo_epochs_and_minibatches(self):
    c = common.tiny_config(**{"loss.num_iterations": 2,
                              "loss.num_minibatches": 2})
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    b = c.rl.prompts_per_step
    state = _state(exp, params, exp.rl_optimizer, exp.adv_tx, b)
    batch = exp.task.sample(jax.random.key(1), b)
    new, m = jax.jit(_rl_step(c, exp))(state, batch)
    self.assertTrue(np.isfinite(m["policy_loss"]))
    # Four optimizer steps: adam's count says so.
    counts = [x for x in jax.tree.leaves(new.opt_state)
              if jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 0]
    self.assertIn(4, [int(x) for x in counts])

  def test_kl_and_entropy_terms(self):
    c = common.tiny_config(**{"loss.kl_coef": 0.1,
                              "loss.entropy_coef": 0.01})
    exp = build_lib.build(c)
    self.assertTrue(exp.needs_ref_params)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    b = c.rl.prompts_per_step
    state = _state(exp, params, exp.rl_optimizer, exp.adv_tx, b, ref=True)
    batch = exp.task.sample(jax.random.key(1), b)
    new, m = jax.jit(_rl_step(c, exp))(state, batch)
    # The entropy bonus moves the parameters even with zero advantages.
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                         new.params, state.params)
    self.assertGreater(max(jax.tree.leaves(moved)), 0.0)
    # The reference equals the policy here, so the k3 KL is ~0.
    self.assertLess(abs(float(m["kl"])), 1e-5)
    self.assertGreater(float(m["entropy"]), 0.0)

  def test_sft_step_lowers_the_loss(self):
    c = common.tiny_config()
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    state = _state(exp, params, exp.sft_optimizer, None, 16)
    step = jax.jit(step_lib.with_batches(
        step_lib.make_sft_step(model_cfg=exp.model_cfg,
                               optimizer=exp.sft_optimizer),
        lambda k: exp.task.sample(k, 16)))
    losses = []
    for _ in range(15):
      state, m = step(state)
      losses.append(float(m["loss"]))
    self.assertLess(np.mean(losses[-3:]), np.mean(losses[:3]))

  def test_eval_is_greedy_and_exact(self):
    c = common.tiny_config()
    exp = build_lib.build(c)
    params = models.init_params(exp.model_cfg, jax.random.key(0))
    batch = exp.task.eval_set(0, 8)
    m = jax.jit(step_lib.make_eval_fn(exp.model_cfg, exp.sampler,
                                      exp.verify))(params, batch)
    self.assertBetween(float(m["accuracy"]), 0.0, 1.0)


class ContextTest(absltest.TestCase):

  def test_first_error_step(self):
    tok = tasks.CharTokenizer()
    targets = jnp.asarray([tok.encode("123") + [tasks.EOS_ID]])
    comps = jnp.asarray([[tok.encode("123") + [tasks.EOS_ID],
                          tok.encode("129") + [tasks.EOS_ID],
                          tok.encode("023") + [tasks.EOS_ID]]])
    got = context_lib.first_error_step(comps, targets, jnp.asarray([4]))
    np.testing.assert_array_equal(got, [[3, 2, 0]])

  def test_every_registered_requirement_is_provided(self):
    for name, info in advantages.INFO.items():
      missing = set(info.requires) - set(context_lib.SUPPORTED)
      self.assertEmpty(missing, f"{name} needs {missing}")


if __name__ == "__main__":
  absltest.main()
