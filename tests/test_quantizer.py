import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import init_state, tiny_config
from mnistgen_jax import models, quantizer
from mnistgen_jax import train as train_lib


@pytest.fixture
def setup():
  key1, key2 = jax.random.split(jax.random.PRNGKey(0))
  z_e = jax.random.normal(key1, (4, 3, 3, 5))
  codebook = jax.random.normal(key2, (7, 5))
  return z_e, codebook


def test_nearest_codes_against_brute_force(setup):
  z_e, codebook = setup
  q = quantizer.quantize(z_e, codebook)
  flat = np.asarray(z_e).reshape(-1, 5)
  brute = ((flat[:, None] - np.asarray(codebook)[None]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(np.asarray(q.indices).reshape(-1), brute)
  np.testing.assert_allclose(q.quantized, np.asarray(codebook)[brute].reshape(z_e.shape), atol=1e-6)
  assert float(q.counts.sum()) == 36


def test_reconstruction_gradient_is_straight_through_and_skips_the_codebook(setup):
  z_e, codebook = setup
  weights = jax.random.normal(jax.random.PRNGKey(9), z_e.shape)
  recon = lambda z, c: jnp.sum(weights * quantizer.quantize(z, c).quantized)
  g_z, g_c = jax.grad(recon, argnums=(0, 1))(z_e, codebook)
  np.testing.assert_allclose(g_z, weights, rtol=1e-6)  # Identity through the quantizer.
  assert float(jnp.abs(g_c).max()) == 0.0


def test_codebook_term_moves_only_the_codebook(setup):
  z_e, codebook = setup
  loss = lambda z, c: quantizer.quantize(z, c).codebook_loss.sum()
  g_z, g_c = jax.grad(loss, argnums=(0, 1))(z_e, codebook)
  assert float(jnp.abs(g_z).max()) == 0.0
  # d/de sum ||z - e||^2 = -2 sum over assigned z of (z - e).
  q = quantizer.quantize(z_e, codebook)
  flat, idx = np.asarray(z_e).reshape(-1, 5), np.asarray(q.indices).reshape(-1)
  expected = np.zeros((7, 5))
  np.add.at(expected, idx, -2 * (flat - np.asarray(codebook)[idx]))
  np.testing.assert_allclose(g_c, expected, rtol=1e-5, atol=1e-5)


def test_commitment_term_moves_only_the_encoder(setup):
  z_e, codebook = setup
  loss = lambda z, c: quantizer.quantize(z, c).commitment_loss.sum()
  g_z, g_c = jax.grad(loss, argnums=(0, 1))(z_e, codebook)
  assert float(jnp.abs(g_c).max()) == 0.0
  q = quantizer.quantize(z_e, codebook)
  np.testing.assert_allclose(g_z, 2 * (z_e - q.quantized), rtol=1e-5, atol=1e-6)


def test_one_ema_update_equals_numpy_reference(setup):
  z_e, codebook = setup
  rng = np.random.default_rng(0)
  state = quantizer.EMAState(jnp.asarray(rng.uniform(0.5, 2, 7), jnp.float32),
                             jnp.asarray(rng.normal(size=(7, 5)), jnp.float32), codebook)
  q = quantizer.quantize(z_e, codebook)
  new = quantizer.ema_update(state, z_e, q.indices, decay=0.9, epsilon=1e-5)
  # numpy: sonnet's VectorQuantizerEMA arithmetic in float64.
  flat, idx = np.asarray(z_e, np.float64).reshape(-1, 5), np.asarray(q.indices).reshape(-1)
  one_hot = np.eye(7)[idx]
  size = 0.9 * np.asarray(state.cluster_size, np.float64) + 0.1 * one_hot.sum(0)
  summed = 0.9 * np.asarray(state.embed_sum, np.float64) + 0.1 * one_hot.T @ flat
  n = size.sum()
  smoothed = (size + 1e-5) / (n + 7 * 1e-5) * n
  np.testing.assert_allclose(new.cluster_size, size, rtol=1e-5)
  np.testing.assert_allclose(new.embed_sum, summed, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.codebook, summed / smoothed[:, None], rtol=1e-5, atol=1e-6)


def test_perplexity_of_uniform_assignment_is_k():
  codebook = jnp.eye(8)
  z_e = jnp.tile(jnp.eye(8), (3, 1)).reshape(3, 8, 1, 8)  # Each code used 3 times.
  q = quantizer.quantize(z_e, codebook)
  np.testing.assert_allclose(q.perplexity, 8.0, rtol=1e-6)
  assert float(q.usage) == 1.0
  one = quantizer.quantize(jnp.zeros((5, 1, 1, 8)) + codebook[2], codebook)
  np.testing.assert_allclose(one.perplexity, 1.0, rtol=1e-6)
  assert float(one.usage) == 1 / 8


def test_restarted_dead_code_is_used_on_the_next_batch(setup):
  z_e, codebook = setup
  far = codebook.at[3].set(1e3)  # Code 3 is far from everything: never chosen.
  state = quantizer.EMAState(jnp.ones(7), far, far)
  assert 3 not in np.asarray(quantizer.quantize(z_e, far).indices)
  unused = jnp.array([0, 0, 0, 50, 0, 0, 0])
  state, unused = quantizer.restart_dead_codes(jax.random.PRNGKey(1), state, unused, z_e, after=50)
  assert int(unused[3]) == 0
  assert 3 in np.asarray(quantizer.quantize(z_e, state.codebook).indices)
  np.testing.assert_array_equal(state.codebook[:3], far[:3])  # Live codes untouched.


@pytest.mark.parametrize("mode", ["gradient", "ema"])
def test_vqvae_trains_and_updates_the_right_parameters(mode, mnist_slice):
  config = tiny_config("vqvae", codebook_mode=mode, num_codes=16, code_dim=4, restart_after=5)
  model = models.get("vqvae").build(config)
  tx = train_lib.make_optimizer(config, 100)
  state = init_state(model, tx)
  step = jax.jit(train_lib.make_train_step(model, tx))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:64]))
  y = jnp.asarray(mnist_slice[1][:64])
  first = None
  start = state
  for _ in range(60):
    state, metrics = step(state, x, y)
    first = first if first is not None else float(metrics["loss"])
  assert float(metrics["loss"]) < 0.8 * first
  if mode == "ema":
    assert "codebook" not in state.params
    assert not np.allclose(state.model_state["vq"]["codebook"], start.model_state["vq"]["codebook"])
  else:
    assert "vq" not in state.model_state
    assert not np.allclose(state.params["codebook"], start.params["codebook"])
  assert 1.0 <= float(metrics["perplexity"]) <= 16.0
