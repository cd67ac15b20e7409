"""Meshes, logical-name shardings and a sharded matmul on 8 CPU devices."""

from typing import NamedTuple

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_group import parallel
from jaxrl_group.parallel import DEFAULT_RULES
from jaxrl_group.parallel import logical_to_spec
from jaxrl_group.parallel import make_mesh

AXES3 = (("data", 2), ("fsdp", 2), ("tensor", 2))


class EmptyState(NamedTuple):
  pass


class AdamLike(NamedTuple):
  count: object
  mu: object


def test_eight_devices_and_exports():
  assert jax.device_count() == 8
  for name in parallel.__all__:
    assert hasattr(parallel, name), name


@pytest.mark.parametrize("axes, expected", [
    ((("data", 8),), {"data": 8}),
    ((("data", -1),), {"data": 8}),
    ((("data", 4), ("fsdp", 2)), {"data": 4, "fsdp": 2}),
    ((("data", -1), ("fsdp", 2)), {"data": 4, "fsdp": 2}),
    ((("data", -1), ("fsdp", 1), ("tensor", 1)),
     {"data": 8, "fsdp": 1, "tensor": 1}),
    (AXES3, {"data": 2, "fsdp": 2, "tensor": 2}),
    ((("data", 2), ("fsdp", -1), ("tensor", 2)),
     {"data": 2, "fsdp": 2, "tensor": 2}),
])
def test_make_mesh_shapes(axes, expected):
  mesh = make_mesh(axes)
  assert dict(mesh.shape) == expected
  assert mesh.axis_names == tuple(expected)
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * len(expected)
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_on_some_devices():
  mesh = make_mesh((("data", -1), ("tensor", 2)), devices=jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 2, "tensor": 2}
  assert sorted(d.id for d in mesh.devices.flat) == [0, 1, 2, 3]


@pytest.mark.parametrize("axes, words", [
    ((("data", -1), ("fsdp", -1)), "only one size may be -1"),
    ((("data", 4), ("data", 2)), "more than once"),
    ((("data", 3), ("fsdp", -1)), "does not divide 8"),
    ((("data", 4),), "multiply to 8"),
    ((("data", 4), ("fsdp", 4)), "multiply to 8"),
    ((("data", 0), ("fsdp", -1)), ">= 1 or -1"),
    ((), "at least one"),
    ((("data",),), "pair"),
    (("data",), "pair"),
    ((("data", 2.0),), "pair"),
])
def test_make_mesh_errors_name_axes_and_device_count(axes, words):
  with pytest.raises(ValueError, match="axes=") as info:
    make_mesh(axes)
  assert words in str(info.value)
  assert "8 devices" in str(info.value)


def test_logical_to_spec_without_mesh_keeps_every_rule():
  names = ("layers", "embed", "heads", "head_dim")
  assert logical_to_spec(names) == P(None, "fsdp", "tensor", None)
  assert logical_to_spec(("batch", None)) == P(("data", "fsdp"), None)
  assert logical_to_spec(("vocab", "embed")) == P("tensor", "fsdp")
  assert logical_to_spec(()) == P()
  assert logical_to_spec([None, "mlp"]) == P(None, "tensor")


def test_logical_to_spec_drops_absent_and_size_one_axes():
  names = ("layers", "embed", "heads", "head_dim")
  data_only = make_mesh((("data", 8),))
  assert logical_to_spec(names, mesh=data_only) == P(None, None, None, None)
  assert logical_to_spec(("batch", None), mesh=data_only) == P("data", None)
  ones = make_mesh((("data", -1), ("fsdp", 1), ("tensor", 1)))
  assert logical_to_spec(names, mesh=ones) == P(None, None, None, None)
  dp_fsdp = make_mesh((("data", 4), ("fsdp", 2)))
  assert logical_to_spec(names, mesh=dp_fsdp) == P(None, "fsdp", None, None)
  assert logical_to_spec(("batch",), mesh=dp_fsdp) == P(("data", "fsdp"))
  full = make_mesh(AXES3)
  assert logical_to_spec(names, mesh=full) == P(None, "fsdp", "tensor", None)


def test_logical_to_spec_divisibility_fallback():
  full = make_mesh(AXES3)
  # embed 6 divides fsdp=2; 3 heads do not divide tensor=2: replicated.
  spec = logical_to_spec(("layers", "embed", "heads", "head_dim"),
                         mesh=full, shape=(4, 6, 3, 8))
  assert spec == P(None, "fsdp", None, None)
  dp_fsdp = make_mesh((("data", 4), ("fsdp", 2)))
  # Batch 16 divides 4 * 2; batch 4 only the leading "data" axis; 3 none.
  assert logical_to_spec(("batch", None), mesh=dp_fsdp,
                         shape=(16, 5)) == P(("data", "fsdp"), None)
  assert logical_to_spec(("batch", None), mesh=dp_fsdp,
                         shape=(4, 5)) == P("data", None)
  assert logical_to_spec(("batch", None), mesh=dp_fsdp,
                         shape=(3, 5)) == P(None, None)
  # Without a mesh the sizes are unknown and the rules stand.
  assert logical_to_spec(("heads",), shape=(3,)) == P("tensor")


def test_logical_to_spec_uses_a_mesh_axis_once():
  full = make_mesh(AXES3)
  assert logical_to_spec(("heads", "mlp"), mesh=full) == P("tensor", None)
  # When the first dimension falls back, the axis is free for the next one.
  assert logical_to_spec(("heads", "mlp"), mesh=full,
                         shape=(3, 4)) == P(None, "tensor")


def test_logical_to_spec_custom_rules():
  rules = {**DEFAULT_RULES, "embed": ("fsdp", "tensor"), "layers": "data"}
  full = make_mesh(AXES3)
  assert logical_to_spec(("layers", "embed"), rules, full) == P(
      "data", ("fsdp", "tensor"))
  with pytest.raises(TypeError):
    DEFAULT_RULES["embed"] = None  # read-only


@pytest.mark.parametrize("names, shape, words", [
    (("embed", "nope"), None, "'nope'"),
    (("embed",), (4, 4), "rank 2"),
    ("embed", None, "tuple"),
    ((3,), None, "str or None"),
])
def test_logical_to_spec_errors(names, shape, words):
  with pytest.raises(ValueError, match="names") as info:
    logical_to_spec(names, shape=shape)
  assert words in str(info.value)


def test_bad_rule_errors():
  with pytest.raises(ValueError, match=r"rules\['embed'\]"):
    logical_to_spec(("embed",), {"embed": ("fsdp", 3)})


def test_tree_shardings_with_tuple_containers():
  full = make_mesh(AXES3)
  sds = jax.ShapeDtypeStruct
  abstract = {
      "params": {
          "embedding": sds((64, 16), jnp.float32),
          "layers": {"wq": sds((2, 16, 4, 8), jnp.bfloat16),
                     "norm": sds((2, 16), jnp.float32)},
      },
      # NamedTuple and plain-tuple containers must not read as names.
      "opt": (AdamLike(count=sds((), jnp.int32),
                       mu={"w": sds((16, 6), jnp.float32)}),
              EmptyState()),
      "nothing": None,
      "key": sds((), jax.random.key(0).dtype),
  }
  names = {
      "params": {
          "embedding": ("vocab", "embed"),
          "layers": {"wq": ("layers", "embed", "heads", "head_dim"),
                     "norm": ("layers", None)},
      },
      "opt": (AdamLike(count=(), mu={"w": ("embed", "mlp")}), EmptyState()),
      "nothing": None,
      "key": None,
  }
  out = parallel.tree_shardings(abstract, names, full)
  assert jax.tree.structure(out) == jax.tree.structure(abstract)
  ns = lambda *spec: NamedSharding(full, P(*spec))
  assert out["params"]["embedding"] == ns("tensor", "fsdp")
  assert out["params"]["layers"]["wq"] == ns(None, "fsdp", "tensor", None)
  assert out["params"]["layers"]["norm"] == ns(None, None)
  assert out["opt"][0].count == ns()
  assert out["opt"][0].mu["w"] == ns("fsdp", "tensor")
  assert isinstance(out["opt"][1], EmptyState)
  assert out["nothing"] is None
  assert out["key"] == ns()
  # names_tree=None replicates every leaf.
  rep = parallel.tree_shardings(abstract, None, full)
  assert all(s == ns() for s in jax.tree.leaves(rep))


def test_tree_shardings_divisibility_and_errors():
  full = make_mesh(AXES3)
  abstract = {"w": jnp.zeros((5, 4)), "v": jnp.zeros((4,))}
  out = parallel.tree_shardings(abstract, {"w": ("embed", "mlp"),
                                           "v": ("mlp",)}, full)
  assert out["w"] == NamedSharding(full, P(None, "tensor"))
  assert out["v"] == NamedSharding(full, P("tensor"))
  with pytest.raises(ValueError, match=r"\['w'\].*rank 2"):
    parallel.tree_shardings(abstract, {"w": ("embed",), "v": None}, full)
  with pytest.raises(ValueError, match="structure of abstract_tree"):
    parallel.tree_shardings(abstract, {"w": ("embed", "mlp")}, full)


def test_batch_sharding_and_replicated():
  dp = make_mesh((("data", 8),))
  assert parallel.batch_sharding(dp, 1) == NamedSharding(dp, P("data"))
  dp_fsdp = make_mesh((("data", 4), ("fsdp", 2)))
  assert parallel.batch_sharding(dp_fsdp, 3) == NamedSharding(
      dp_fsdp, P(("data", "fsdp"), None, None))
  full = make_mesh(AXES3)
  assert parallel.batch_sharding(full, 2) == NamedSharding(
      full, P(("data", "fsdp"), None))
  tp = make_mesh((("data", 1), ("tensor", 8)))
  assert parallel.batch_sharding(tp, 2) == NamedSharding(tp, P(None, None))
  assert parallel.replicated(full) == NamedSharding(full, P())
  x = jax.device_put(np.arange(16.0).reshape(8, 2),
                     parallel.batch_sharding(dp, 2))
  assert {s.data.shape for s in x.addressable_shards} == {(1, 2)}
  with pytest.raises(ValueError, match="ndim"):
    parallel.batch_sharding(dp, 0)


@pytest.mark.parametrize("axes", [
    (("data", 8),),
    (("data", 4), ("fsdp", 2)),
    AXES3,
])
def test_sharded_matmul_matches_unsharded(axes):
  mesh = make_mesh(axes)
  rng = np.random.default_rng(0)
  x_BxD = rng.normal(size=(16, 12)).astype(np.float32)
  w_DxF = rng.normal(size=(12, 8)).astype(np.float32)
  abstract = {"x": x_BxD, "w": w_DxF}
  shardings = parallel.tree_shardings(
      abstract, {"x": ("batch", None), "w": ("embed", "mlp")}, mesh)
  out_sharding = parallel.batch_sharding(mesh, 2)
  f = jax.jit(lambda t: jnp.tanh(t["x"] @ t["w"]),
              in_shardings=(shardings,), out_shardings=out_sharding)
  placed = jax.device_put(abstract, shardings)
  assert placed["w"].sharding == shardings["w"]
  y = f(placed)
  assert y.sharding == out_sharding
  np.testing.assert_allclose(np.asarray(y), np.tanh(x_BxD @ w_DxF),
                             rtol=1e-5, atol=1e-5)


def test_with_shardings():
  mesh = make_mesh(AXES3)
  abstract = {"w": jax.ShapeDtypeStruct((4, 6), jnp.bfloat16)}
  shardings = parallel.tree_shardings(abstract, {"w": ("embed", "mlp")},
                                      mesh)
  out = parallel.with_shardings(abstract, shardings)
  assert out["w"].shape == (4, 6) and out["w"].dtype == jnp.bfloat16
  assert out["w"].sharding == NamedSharding(mesh, P("fsdp", "tensor"))
