"""Checkpointer: sharded train states with optax states and typed keys."""

from typing import Any, NamedTuple

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_group import parallel
from jaxrl_group.train import Checkpointer


class EmptyState(NamedTuple):
  pass


class RunningStats(NamedTuple):
  count: jax.Array
  keys: jax.Array


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  opt_state: Any
  adv_state: Any
  key: jax.Array


OPT = optax.adamw(1e-2)
NAMES = {"embed": {"w": ("batch", None), "bias": None},
         "head": {"b": (None,)}}


def init_state(seed=0, adv="empty"):
  rng = np.random.default_rng(seed)
  params = {
      "embed": {"w": jnp.asarray(rng.normal(size=(16, 4)), jnp.float32),
                "bias": None},
      "head": {"b": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16)},
  }
  if adv == "empty":
    adv_state = EmptyState()
  else:
    adv_state = RunningStats(
        count=jnp.arange(8, dtype=jnp.int32),
        keys=jax.random.split(jax.random.key(seed + 1, impl="rbg"), 8))
  return TrainState(step=jnp.int32(0), params=params,
                    opt_state=OPT.init(params), adv_state=adv_state,
                    key=jax.random.key(seed))


def shardings_for(state, mesh):
  """Batch-sharded "w" (and its Adam moments), the rest replicated."""
  def one(path, x):
    keys = jax.tree_util.keystr(path)
    if "['w']" in keys or keys.startswith(".adv_state."):
      return parallel.batch_sharding(mesh, x.ndim)
    return parallel.replicated(mesh)
  return jax.tree_util.tree_map_with_path(one, state)


def take_steps(state, n):
  """A few optimiser steps so that the Adam moments are not trivial."""
  def loss(params):
    return (jnp.sum(params["embed"]["w"] ** 2)
            + jnp.sum(params["head"]["b"].astype(jnp.float32)))
  params, opt_state = state.params, state.opt_state
  for _ in range(n):
    grads = jax.grad(loss)(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  key, _ = jax.random.split(state.key)
  return state._replace(step=state.step + n, params=params,
                        opt_state=opt_state, key=key)


def placed_state(mesh, adv="empty", steps=2):
  state = take_steps(init_state(adv=adv), steps)
  return jax.device_put(state, shardings_for(state, mesh))


def abstract_for(mesh, adv="empty"):
  abstract = jax.eval_shape(lambda: init_state(adv=adv))
  return parallel.with_shardings(abstract, shardings_for(abstract, mesh))


def assert_same_state(restored, state, abstract):
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want, ab in zip(jax.tree.leaves(restored), jax.tree.leaves(state),
                           jax.tree.leaves(abstract)):
    assert got.dtype == ab.dtype
    assert got.shape == ab.shape
    assert got.sharding == ab.sharding, (got.sharding, ab.sharding)
    if jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(got) == jax.random.key_impl(want)
      got, want = jax.random.key_data(got), jax.random.key_data(want)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("adv", ["empty", "stats"])
def test_round_trip_sharded_train_state(tmp_path, adv):
  mesh = parallel.make_mesh((("data", 8),))
  state = placed_state(mesh, adv)
  assert state.params["head"]["b"].dtype == jnp.bfloat16
  assert isinstance(state.opt_state[0], optax.ScaleByAdamState)
  data_state = {"epoch": 1, "index": [3, 4], "name": "gsm8k", "done": None}
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.save(2, state, data_state=data_state)
    assert ckpt.latest_step() == 2
    abstract = abstract_for(mesh, adv)
    restored, got_data = ckpt.restore(abstract)
  assert got_data == data_state
  assert_same_state(restored, state, abstract)
  assert restored.params["embed"]["bias"] is None
  assert restored.params["embed"]["w"].sharding == NamedSharding(
      mesh, P("data", None))
  # The Adam moments carry the optimiser going on exactly as before.
  a = take_steps(state, 1)
  b = take_steps(restored, 1)
  np.testing.assert_array_equal(np.asarray(a.params["embed"]["w"]),
                                np.asarray(b.params["embed"]["w"]))
  np.testing.assert_array_equal(
      np.asarray(jax.random.key_data(jax.random.split(restored.key)[0])),
      np.asarray(jax.random.key_data(jax.random.split(state.key)[0])))


def test_restore_onto_another_mesh(tmp_path):
  state = placed_state(parallel.make_mesh((("data", 8),)), "stats")
  ckpt = Checkpointer(tmp_path)
  ckpt.save(0, state)
  mesh = parallel.make_mesh((("data", 4), ("fsdp", 2)))
  abstract = abstract_for(mesh, "stats")
  restored, data_state = ckpt.restore(abstract)
  ckpt.close()
  assert data_state is None
  assert_same_state(restored, state, abstract)
  assert restored.adv_state.keys.sharding == NamedSharding(
      mesh, P(("data", "fsdp")))
  assert jax.random.key_impl(restored.adv_state.keys) == "rbg"


def test_max_to_keep_and_latest_step(tmp_path):
  state = init_state()
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in range(5):
      assert ckpt.save(step, state, data_state={"step": step})
    assert ckpt.all_steps() == [3, 4]
    assert ckpt.latest_step() == 4
    _, data_state = ckpt.restore(jax.eval_shape(init_state), step=3)
    assert data_state == {"step": 3}
  assert sorted(p.name for p in tmp_path.iterdir()
                if p.name.isdigit()) == ["3", "4"]


def test_save_interval_and_force(tmp_path):
  state = init_state()
  with Checkpointer(tmp_path, max_to_keep=None,
                    save_interval_steps=3) as ckpt:
    saved = [ckpt.save(s, state) for s in range(7)]
    assert saved == [True, False, False, True, False, False, True]
    assert [ckpt.should_save(s) for s in (8, 9, 10)] == [False, True, False]
    assert ckpt.save(7, state, force=True)
    # A step not after the latest one is not saved again.
    assert not ckpt.save(6, state)
    assert ckpt.all_steps() == [0, 3, 6, 7]


def test_first_save_into_an_empty_directory_is_kept(tmp_path):
  # orbax's initial-save policy: a run resumed off the interval still gets
  # a checkpoint at once.
  with Checkpointer(tmp_path, save_interval_steps=3) as ckpt:
    assert ckpt.should_save(5)
    assert ckpt.save(5, init_state())
    assert [ckpt.save(s, init_state()) for s in (6, 7, 8, 9)] == [
        True, False, False, True]
    assert ckpt.all_steps() == [5, 6, 9]


def test_empty_directory(tmp_path):
  with Checkpointer(tmp_path / "new") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.all_steps() == []
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
      ckpt.restore(jax.eval_shape(init_state))
    ckpt.save(0, init_state())
    with pytest.raises(FileNotFoundError, match=r"step 5.*saved steps: \[0\]"):
      ckpt.restore(jax.eval_shape(init_state), step=5)


def test_reopened_directory_resumes(tmp_path):
  state = take_steps(init_state(), 1)
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(10, state, data_state={"cursor": 7})
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 10
    # Concrete arrays also serve as the target (their shardings kept).
    restored, data_state = ckpt.restore(init_state())
  assert data_state == {"cursor": 7}
  np.testing.assert_array_equal(np.asarray(restored.params["head"]["b"]),
                                np.asarray(state.params["head"]["b"]))
  assert int(restored.step) == 1


def test_async_save(tmp_path):
  mesh = parallel.make_mesh((("data", 8),))
  state = placed_state(mesh)
  with Checkpointer(tmp_path, async_save=True) as ckpt:
    assert ckpt.save(1, state, data_state=[1, 2])
    ckpt.wait()
    abstract = abstract_for(mesh)
    restored, data_state = ckpt.restore(abstract)
  assert data_state == [1, 2]
  assert_same_state(restored, state, abstract)


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(tmp_path, max_to_keep=0)
  with pytest.raises(ValueError, match="save_interval_steps"):
    Checkpointer(tmp_path, save_interval_steps=0)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match="data_state must be JSON-able"):
      ckpt.save(0, init_state(), data_state={"x": np.zeros(2)})
    with pytest.raises(ValueError, match="step must be an int"):
      ckpt.save(-1, init_state())
    assert ckpt.latest_step() is None
