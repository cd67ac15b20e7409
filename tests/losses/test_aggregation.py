"""Aggregation modes: exact numerators and denominators, split invariance."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxrl_group.losses import _aggregation as agg

MODES = [(m, m) for m in agg.AGGREGATIONS]
C = 8.0  # Dr.GRPO's constant for seq_mean_token_sum_norm


def value(loss, mask, mode):
  return agg.aggregate(loss, mask, mode, norm_constant=C).value


class GoldenTest(parameterized.TestCase):
  # Two sequences: losses [1, 2, 3] (3 valid) and [4, 0, 0] (1 valid), plus
  # an empty sequence, which counts in no denominator.
  L = np.array([[[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]]])
  M = np.array([[[True, True, True], [True, False, False],
                 [False, False, False]]])

  @parameterized.named_parameters(
      ("token_mean", "token_mean", 10.0, 4.0),  # (1+2+3+4) / 4 tokens
      ("seq_mean_token_mean", "seq_mean_token_mean", 2.0 + 4.0, 2.0),
      ("seq_mean_token_sum", "seq_mean_token_sum", 10.0, 2.0),
      ("seq_mean_token_sum_norm", "seq_mean_token_sum_norm", 10.0, 2 * C),
  )
  def test_numerator_and_denominator(self, mode, total, weight):
    d = agg.aggregate(self.L, self.M, mode, norm_constant=C)
    np.testing.assert_allclose(d.total, total)
    np.testing.assert_allclose(d.weight, weight)
    np.testing.assert_allclose(d.value, total / weight)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      agg.aggregate(self.L, self.M, "seq-mean-token-mean")
    with self.assertRaisesRegex(ValueError, "needs norm_constant"):
      agg.aggregate(self.L, self.M, "seq_mean_token_sum_norm")
    with self.assertRaisesRegex(TypeError, "mask_BxGxT must be a boolean"):
      agg.aggregate(self.L, self.M.astype(np.float32), "token_mean")
    with self.assertRaisesRegex(ValueError, "mask_BxGxT must have the shape"):
      agg.aggregate(self.L, self.M[..., :2], "token_mean")

  def test_empty_batch_value_is_zero(self):
    d = agg.aggregate(self.L, np.zeros_like(self.M), "token_mean")
    self.assertEqual(float(d.value), 0.0)


def _problem(seed=0, b=8, g=4, t=12, d=5):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, g, t, d)).astype(np.float32)
  lengths = rng.integers(0, t + 1, size=(b, g))
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  w = rng.normal(size=(d,)).astype(np.float32)
  return x, mask, w


def _loss_tokens(w, x):
  # A smooth per-token loss of the parameters w.
  return jnp.tanh(x @ w) ** 2


class SplitInvarianceTest(parameterized.TestCase):
  """The same global batch gives the same value and gradient for any split.

  verl-project/verl#3741: seq-mean-token-sum-norm scaled with the micro-batch
  size; with deferred pairs every mode is exact.
  """

  @parameterized.named_parameters(*MODES)
  def test_four_micro_batches_equal_full_batch(self, mode):
    x, mask, w = _problem()

    def total(w, x, m):
      return agg.aggregate(_loss_tokens(w, x), m, mode, norm_constant=C).total

    def weight(m):
      return agg.aggregate(jnp.zeros(m.shape), m, mode,
                           norm_constant=C).weight

    full = agg.aggregate(_loss_tokens(w, x), mask, mode, norm_constant=C)
    full_grad = jax.grad(
        lambda w: agg.aggregate(_loss_tokens(w, x), mask, mode,
                                norm_constant=C).value)(w)
    # Gradient accumulation: sum the totals' gradients and the weights, then
    # divide once.
    parts = [(x[i:i + 2], mask[i:i + 2]) for i in range(0, 8, 2)]
    grads = sum(jax.grad(total)(w, xp, mp) for xp, mp in parts)
    weights = sum(weight(mp) for _, mp in parts)
    totals = sum(total(w, xp, mp) for xp, mp in parts)
    np.testing.assert_allclose(totals / weights, full.value, rtol=1e-5)
    np.testing.assert_allclose(grads / weights, full_grad, rtol=1e-5,
                               atol=1e-7)
    combined = agg.combine(*(agg.aggregate(_loss_tokens(w, xp), mp, mode,
                                           norm_constant=C)
                             for xp, mp in parts))
    np.testing.assert_allclose(combined.value, full.value, rtol=1e-5)

  @parameterized.named_parameters(*MODES)
  def test_eight_device_mesh_equals_one_device(self, mode):
    x, mask, w = _problem(1)
    mesh = jax.make_mesh((8,), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    shard = NamedSharding(mesh, P("data"))

    def f(w, x, m):
      return agg.aggregate(_loss_tokens(w, x), m, mode, norm_constant=C).value

    single = jax.jit(jax.value_and_grad(f))(w, x, mask)
    sharded = jax.jit(jax.value_and_grad(f))(
        w, jax.device_put(x, shard), jax.device_put(mask, shard))
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-6)
    np.testing.assert_allclose(sharded[1], single[1], rtol=1e-5, atol=1e-7)


class TokenMeanMetricTest(absltest.TestCase):

  def test_token_mean_combines_exactly(self):
    x, mask, _ = _problem(2)
    x = x[..., 0]
    parts = [agg.token_mean(x[i:i + 4], mask[i:i + 4]) for i in (0, 4)]
    np.testing.assert_allclose(agg.combine(*parts).value,
                               x[mask].mean(), rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
