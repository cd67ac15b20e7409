"""Invariants every registered estimator must satisfy (parameterized over REGISTRY)."""

import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp

from jaxrl_group import advantages as A
from tests.advantages import inputs

# Factories whose arguments have no defaults.
KWARGS = {"clip": dict(max_abs=1.0)}
NAMES = sorted(A.REGISTRY)


def build(name):
  return A.get(name, **KWARGS.get(name, {}))


def run(name, r, mask, ctx, tx=None):
  tx = tx or build(name)
  state = tx.init(r)
  return tx.update(r, state, mask_BxG=mask, **ctx)


def named(fn):
  return parameterized.named_parameters((n, n) for n in NAMES)(fn)


class RegistryInvariantsTest(parameterized.TestCase):

  @named
  def test_shape_dtype_finite_and_masked_zero(self, name):
    rng = np.random.default_rng(0)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    adv, _ = run(name, r, mask, ctx)
    self.assertEqual(adv.shape, inputs.output_shape(name))
    self.assertEqual(adv.dtype, jnp.float32)
    adv = np.asarray(adv)
    self.assertTrue(np.isfinite(adv).all(), f"{name}: non-finite {adv}")
    keep = inputs.expand(mask, adv)
    np.testing.assert_array_equal(np.where(keep, 0, adv), 0)

  @named
  def test_all_equal_rewards_give_finite_output(self, name):
    rng = np.random.default_rng(1)
    r = inputs.make_rewards(name, rng)
    r[:] = 0.7
    ctx = inputs.make_ctx(name, rng)
    adv, _ = run(name, r, None, ctx)
    self.assertTrue(np.isfinite(np.asarray(adv)).all())

  @named
  def test_masked_entries_do_not_enter_statistics(self, name):
    rng = np.random.default_rng(2)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    adv1, _ = run(name, r, mask, ctx)
    r2 = r.copy()
    r2[~mask] = 1e3 * rng.normal(size=r2[~mask].shape)
    adv2, _ = run(name, r2, mask, ctx)
    np.testing.assert_allclose(adv1, adv2, rtol=1e-5, atol=1e-6)

  @named
  def test_jit_equals_eager(self, name):
    rng = np.random.default_rng(3)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    tx = build(name)
    state = tx.init(r)
    eager, s1 = tx.update(r, state, mask_BxG=mask, **ctx)
    jitted, s2 = jax.jit(tx.update)(r, state, mask_BxG=mask, **ctx)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(s1, s2)

  @named
  def test_vmap_over_leading_axis(self, name):
    rng = np.random.default_rng(4)
    runs = [inputs.edge_case_batch(name, rng) for _ in range(3)]
    ctxs = [inputs.make_ctx(name, rng) for _ in range(3)]
    tx = build(name)
    state = tx.init(runs[0][0])
    stack = lambda xs: np.stack(xs)  # pylint: disable=unnecessary-lambda
    r = stack([x[0] for x in runs])
    mask = stack([x[1] for x in runs])
    ctx = {k: stack([c[k] for c in ctxs]) for k in ctxs[0]}
    f = lambda r, m, c: tx.update(r, state, mask_BxG=m, **c)[0]
    batched = jax.vmap(f)(r, mask, ctx)
    for i in range(3):
      np.testing.assert_allclose(batched[i], f(r[i], mask[i], ctxs[i]),
                                 rtol=1e-5, atol=1e-6)

  @named
  def test_no_recompilation_on_new_values(self, name):
    rng = np.random.default_rng(5)
    tx = build(name)
    traces = []

    def f(r, mask, ctx):
      traces.append(1)
      return tx.update(r, tx.init(r), mask_BxG=mask, **ctx)[0]

    jf = jax.jit(f)
    for _ in range(3):
      r, mask = inputs.edge_case_batch(name, rng)
      jax.block_until_ready(jf(r, mask, inputs.make_ctx(name, rng)))
    self.assertLen(traces, 1)

  @named
  def test_init_on_shape_dtype_struct(self, name):
    rng = np.random.default_rng(6)
    r = inputs.make_rewards(name, rng)
    tx = build(name)
    spec = jax.ShapeDtypeStruct(r.shape, r.dtype)
    abstract = jax.eval_shape(tx.init, spec)
    concrete = tx.init(jnp.asarray(r))
    self.assertEqual(jax.tree.structure(abstract),
                     jax.tree.structure(concrete))
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, concrete)

  # Token-level outputs are per position; grpo_passk breaks ties by index.
  @parameterized.named_parameters(
      (n, n) for n in NAMES
      if not A.INFO[n].token_level and n != "grpo_passk")
  def test_group_permutation_equivariance(self, name):
    rng = np.random.default_rng(7)
    _, mask = inputs.edge_case_batch(name, rng)
    r = inputs.make_rewards(name, rng)  # continuous: no ties
    ctx = inputs.make_ctx(name, rng)
    perm = rng.permutation(inputs.G)
    adv, _ = run(name, r, mask, ctx)
    pctx = {k: (v[:, perm] if k.rsplit("_", 1)[-1].startswith("BxG") else v)
            for k, v in ctx.items()}
    padv, _ = run(name, r[:, perm], mask[:, perm], pctx)
    np.testing.assert_allclose(np.asarray(adv)[:, perm], padv, rtol=1e-5,
                               atol=1e-6)

  @named
  def test_float64_agrees_with_float32(self, name):
    rng = np.random.default_rng(8)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    adv32, _ = run(name, r, mask, ctx)
    with jax.enable_x64(True):
      ctx64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
               for k, v in ctx.items()}
      adv64, _ = run(name, r.astype(np.float64), mask, ctx64)
      self.assertEqual(adv64.dtype, jnp.float64)
      np.testing.assert_allclose(adv32, np.asarray(adv64), rtol=1e-4,
                                 atol=1e-5)


class CheckpointTest(parameterized.TestCase):
  """Stateful estimators' states survive an orbax save and restore."""

  @parameterized.named_parameters(
      (n, n) for n in NAMES if A.INFO[n].stateful)
  def test_state_round_trips_through_a_checkpoint(self, name):
    rng = np.random.default_rng(10)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    tx = build(name)
    _, state = tx.update(r, tx.init(r), mask_BxG=mask, **ctx)
    path = self.enter_context(tempfile.TemporaryDirectory()) + "/state"
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(path, state)
      ckpt.wait_until_finished()
      abstract = jax.eval_shape(tx.init, jax.ShapeDtypeStruct(r.shape,
                                                              r.dtype))
      restored = ckpt.restore(path, abstract)
    self.assertEqual(jax.tree.structure(restored), jax.tree.structure(state))
    chex.assert_trees_all_equal(restored, state)
    # The restored state continues exactly like the original.
    a, _ = tx.update(r, state, mask_BxG=mask, **ctx)
    b, _ = tx.update(r, restored, mask_BxG=mask, **ctx)
    np.testing.assert_array_equal(a, b)


class ShardingTest(parameterized.TestCase):
  """B sharded over an 8-device mesh: same values, sharding kept.

  Both mesh kinds: ``Auto`` axes (GSPMD propagation) and ``Explicit`` axes
  (sharding in types, the default of ``jax.make_mesh``).
  """

  @parameterized.named_parameters(
      (f"{n}_{kind.name.lower()}", n, kind) for n in NAMES
      for kind in (jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit))
  def test_sharded_equals_single_device(self, name, kind):
    self.assertEqual(jax.device_count(), 8)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(kind,))
    batch = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(9)
    r, mask = inputs.edge_case_batch(name, rng)
    ctx = inputs.make_ctx(name, rng)
    tx = build(name)
    single, _ = jax.jit(tx.update)(r, tx.init(r), mask_BxG=mask, **ctx)

    def shard(x):
      if np.ndim(x) and x.shape[0] == inputs.B:
        return jax.device_put(x, batch)
      return x

    with jax.set_mesh(mesh):
      r_s = shard(r)
      state = tx.init(r_s)
      out, new_state = jax.jit(tx.update)(
          r_s, state, mask_BxG=shard(mask),
          **{k: shard(v) for k, v in ctx.items()})
    np.testing.assert_allclose(single, out, rtol=1e-5, atol=1e-6)
    self.assertTrue(out.sharding.is_equivalent_to(batch, out.ndim),
                    f"{name}: output sharding {out.sharding}")
    self.assertEqual(jax.tree.map(jax.typeof, state),
                     jax.tree.map(jax.typeof, new_state))


if __name__ == "__main__":
  absltest.main()
