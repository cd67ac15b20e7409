"""Token log-probabilities from logits: golden values, chunking, gradients."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxrl_group.losses import _logprobs as lp


def np_logprobs(logits, tokens, temperature=1.0):
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  logsm = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return np.take_along_axis(logsm, np.asarray(tokens)[..., None], -1)[..., 0]


def problem(shape=(2, 3, 7, 11), seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  logits = (3 * rng.normal(size=shape)).astype(dtype)
  tokens = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
  return logits, tokens


def chunked(chunk):
  def f(logits, tokens, temperature=1.0):
    return lp.token_logprobs_chunked(logits, tokens, chunk_size=chunk,
                                     temperature=temperature)
  return f


def whole(logits, tokens, temperature=1.0):
  return lp.token_logprobs(logits, tokens, temperature=temperature)


def central_difference(f, x, v, eps=1e-6):
  """(f(x + eps v) - f(x - eps v)) / (2 eps) ~ <grad f(x), v>."""
  return (f(x + eps * v) - f(x - eps * v)) / (2 * eps)


class GoldenTest(parameterized.TestCase):

  def test_hand_values(self):
    # logits [0, ln 3]: p = [1/4, 3/4]. At tau = 2, z = [0, ln(3)/2]:
    # p_1 = sqrt(3) / (1 + sqrt(3)).
    logits = np.array([[0.0, math.log(3.0)]] * 2, np.float32)
    tokens = np.array([1, 0], np.int32)
    np.testing.assert_allclose(lp.token_logprobs(logits, tokens),
                               [math.log(0.75), math.log(0.25)], rtol=1e-6)
    s3 = math.sqrt(3.0)
    np.testing.assert_allclose(
        lp.token_logprobs(logits, tokens, temperature=2.0),
        [math.log(s3 / (1 + s3)), math.log(1 / (1 + s3))], rtol=1e-6)

  @parameterized.named_parameters(
      ("TxV", (7, 11)), ("BxTxV", (3, 7, 11)), ("BxGxTxV", (2, 3, 7, 11)))
  def test_matches_numpy_any_leading_dims(self, shape):
    logits, tokens = problem(shape)
    for tau in (1.0, 0.6, 1.7):
      out = lp.token_logprobs(logits, tokens, temperature=tau)
      self.assertEqual(out.shape, shape[:-1])
      self.assertEqual(out.dtype, jnp.float32)
      np.testing.assert_allclose(out, np_logprobs(logits, tokens, tau),
                                 rtol=1e-5, atol=1e-5)

  def test_large_logits_are_stable(self):
    logits, tokens = problem((4, 9))
    shifted = logits + np.float32(1e4)
    np.testing.assert_allclose(lp.token_logprobs(shifted, tokens),
                               np_logprobs(logits, tokens), atol=2e-3)

  def test_bfloat16_is_upcast(self):
    logits, tokens = problem()
    low = jnp.asarray(logits, jnp.bfloat16)
    out = lp.token_logprobs(low, tokens)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(
        out, np_logprobs(np.asarray(low, np.float32), tokens), rtol=1e-5,
        atol=1e-5)
    np.testing.assert_allclose(
        lp.token_logprobs_chunked(low, tokens, chunk_size=3), out, atol=1e-6)

  def test_minus_inf_logits(self):
    # A banned token (-inf) has probability 0 and spoils nothing else.
    logits = np.array([[0.0, 0.0, -np.inf]], np.float32)
    for fn in (whole, chunked(1)):
      np.testing.assert_allclose(fn(logits, np.array([0])), [math.log(0.5)])
      self.assertEqual(float(fn(logits, np.array([2]))[0]), -np.inf)
      g = jax.grad(lambda x, fn=fn: fn(x, np.array([0]))[0])(logits)
      np.testing.assert_allclose(g, [[0.5, -0.5, 0.0]])

  def test_empty_time_axis(self):
    logits = np.zeros((2, 0, 5), np.float32)
    tokens = np.zeros((2, 0), np.int32)
    self.assertEqual(lp.token_logprobs(logits, tokens).shape, (2, 0))
    self.assertEqual(
        lp.token_logprobs_chunked(logits, tokens, chunk_size=4).shape, (2, 0))


class ChunkedTest(parameterized.TestCase):
  """Chunked == whole in value and gradient (wrt logits and temperature)."""

  @parameterized.named_parameters(
      ("chunk1", 1), ("chunk2", 2), ("chunk3_not_dividing", 3),
      ("chunk5_not_dividing", 5), ("chunk_T", 7), ("chunk_above_T", 10))
  def test_values_and_gradients(self, chunk):
    logits, tokens = problem()
    w = np.random.default_rng(1).normal(size=tokens.shape).astype(np.float32)
    for tau in (1.0, 0.7):
      np.testing.assert_allclose(chunked(chunk)(logits, tokens, tau),
                                 lp.token_logprobs(logits, tokens,
                                                   temperature=tau),
                                 rtol=1e-6, atol=1e-6)

    def loss(fn):
      return lambda x, t: jnp.sum(w * jnp.sin(fn(x, tokens, t)))

    g_whole = jax.grad(loss(whole), (0, 1))(logits, 0.7)
    g_chunk = jax.grad(loss(chunked(chunk)), (0, 1))(logits, 0.7)
    np.testing.assert_allclose(g_chunk[0], g_whole[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_chunk[1], g_whole[1], rtol=1e-5)

  def test_gradient_is_onehot_minus_softmax(self):
    logits, tokens = problem((3, 5, 6))
    tau = 0.8
    p = jax.nn.softmax(logits / tau, axis=-1)
    onehot = jax.nn.one_hot(tokens, 6)
    expected = (onehot - p) / tau
    for fn in (whole, chunked(2)):
      g = jax.grad(lambda x, fn=fn: jnp.sum(fn(x, tokens, tau)))(logits)
      np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(("whole", None), ("chunked", 3))
  def test_gradient_matches_finite_differences(self, chunk):
    fn = whole if chunk is None else chunked(chunk)
    with jax.enable_x64(True):
      logits, tokens = problem((2, 7, 5), dtype=np.float64)
      rng = np.random.default_rng(2)
      w = rng.normal(size=tokens.shape)
      v = rng.normal(size=logits.shape)

      def f(x, t=0.9):
        return jnp.sum(w * fn(x, tokens, t))

      g = jax.grad(f)(logits)
      np.testing.assert_allclose(np.sum(g * v), central_difference(f, logits,
                                                                   v),
                                 rtol=1e-6)
      g_t = jax.grad(lambda t: f(logits, t))(0.9)
      fd_t = central_difference(lambda t: f(logits, t), 0.9, 1.0)
      np.testing.assert_allclose(g_t, fd_t, rtol=1e-6)

  def test_jit_and_traced_temperature(self):
    logits, tokens = problem()
    eager = chunked(3)(logits, tokens, 0.7)
    jitted = jax.jit(lambda x, y, t: chunked(3)(x, y, t))(logits, tokens, 0.7)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    whole = jax.jit(lambda x, y, t: lp.token_logprobs(x, y, temperature=t))
    np.testing.assert_allclose(whole(logits, tokens, 0.7), eager, rtol=1e-5,
                               atol=1e-6)

  def test_vmap(self):
    logits, tokens = problem()
    out = jax.vmap(chunked(3))(logits, tokens)
    np.testing.assert_allclose(out, lp.token_logprobs(logits, tokens),
                               rtol=1e-6, atol=1e-6)

  def test_peak_memory_is_one_chunk(self):
    # The compiled temporaries hold about one [B, chunk, V] float32 chunk,
    # never a [B, T, V] one; the gradient itself is the output.
    b, t, v, chunk = 8, 256, 2000, 16
    x = jax.ShapeDtypeStruct((b, t, v), jnp.float32)
    y = jax.ShapeDtypeStruct((b, t), jnp.int32)
    full = b * t * v * 4
    one_chunk = b * chunk * v * 4

    def temp_bytes(f):
      return jax.jit(f).lower(x, y).compile().memory_analysis(
      ).temp_size_in_bytes

    fwd = temp_bytes(chunked(chunk))
    bwd = temp_bytes(jax.grad(lambda x, y: jnp.sum(chunked(chunk)(x, y,
                                                                   0.7))))
    self.assertLess(fwd, 1.5 * one_chunk)
    self.assertLess(bwd, 1.5 * one_chunk)
    self.assertLess(bwd, full / 10)
    # The whole version does not form log_softmax in the forward pass.
    self.assertLess(temp_bytes(lp.token_logprobs), full / 10)

  def test_sharded_batch_equals_single_device(self):
    logits, tokens = problem((8, 7, 11))
    mesh = jax.make_mesh((8,), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    shard = NamedSharding(mesh, P("data"))

    def f(x, y):
      return jnp.sum(chunked(3)(x, y, 0.7) ** 2)

    single = jax.jit(jax.value_and_grad(f))(logits, tokens)
    sharded = jax.jit(jax.value_and_grad(f))(jax.device_put(logits, shard),
                                             jax.device_put(tokens, shard))
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-6)
    np.testing.assert_allclose(sharded[1], single[1], rtol=1e-5, atol=1e-7)


class ErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(("whole", None), ("chunked", 2))
  def test_bad_inputs_name_the_argument(self, chunk):
    fn = whole if chunk is None else chunked(chunk)
    logits, tokens = problem((3, 4, 5))
    with self.assertRaisesRegex(ValueError, "logits_BxTxV must have rank"):
      fn(logits[0, 0], tokens[0, 0])
    with self.assertRaisesRegex(ValueError, "tokens_BxT must have shape"):
      fn(logits, tokens[..., :2])
    with self.assertRaisesRegex(TypeError, "tokens_BxT must be an integer"):
      fn(logits, tokens.astype(np.float32))
    with self.assertRaisesRegex(TypeError, "logits_BxTxV must be a floating"):
      fn(tokens[..., None], tokens)
    with self.assertRaisesRegex(ValueError, r"tokens_BxT must lie in \[0, V"):
      fn(logits, tokens + 5)
    with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
      fn(logits, tokens, 0.0)

  def test_bad_chunk_size(self):
    logits, tokens = problem((3, 4, 5))
    for bad in (0, -1, 2.5, None, True):
      with self.assertRaisesRegex(ValueError, "chunk_size must be"):
        lp.token_logprobs_chunked(logits, tokens, chunk_size=bad)


if __name__ == "__main__":
  absltest.main()
