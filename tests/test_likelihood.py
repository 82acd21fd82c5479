import pytest
import jax
import jax.numpy as jnp
import numpy as np

from conftest import compile_once, init_state, init_variables, tiny_config
from mnistgen_jax import models
from mnistgen_jax import train as train_lib
from mnistgen_jax.metrics import likelihood


def _trained_vae(mnist_slice, name="vae"):
  config = tiny_config(name)
  model = models.get(name).build(config)
  tx = train_lib.make_optimizer(config, 100)
  state = init_state(model, tx)
  step = compile_once(train_lib.make_train_step(model, tx))
  for i in range(30):
    idx = np.arange(64) + 64 * (i % 4)
    state, _ = step(state, train_lib.to_float(jnp.asarray(mnist_slice[0][idx])),
                    jnp.asarray(mnist_slice[1][idx]))
  return model, state.variables()


def test_iwae_bound_is_the_elbo_at_k1_and_tightens_with_k(mnist_slice):
  model, variables = _trained_vae(mnist_slice)
  images, labels = mnist_slice
  key = jax.random.PRNGKey(5)
  k1 = likelihood.iwae_nll(model, variables, images, labels, key, num_samples=1)
  k64 = likelihood.iwae_nll(model, variables, images, labels, key, num_samples=64)
  losses = compile_once(lambda v, k: model.apply(v, jnp.asarray(images) / 255.0, jnp.asarray(labels),
                                            method="losses", rngs={"sample": k})["loss"].mean())
  elbo = np.mean([float(losses(variables, jax.random.PRNGKey(s))) for s in range(8)])
  assert abs(k1 - elbo) < 0.01 * elbo, (k1, elbo)
  assert k64 < k1 - 0.5, (k64, k1)  # A strictly tighter bound on -log p(x).


@pytest.mark.slow
def test_log_importance_weights_match_scipy_densities(mnist_slice):
  from scipy import stats
  model, variables = _trained_vae(mnist_slice, "cond_vae")
  x = jnp.asarray(mnist_slice[0][:3]) / 255.0
  y = jnp.asarray(mnist_slice[1][:3])
  mean, logvar = model.apply(variables, x, y, method="posterior")
  eps = jax.random.normal(jax.random.PRNGKey(0), (2,) + mean.shape)
  log_w = np.asarray(model.apply(variables, x, y, 2, eps=eps, method="log_importance_weights"))
  assert log_w.shape == (3, 2)
  mean, std = np.asarray(mean, np.float64), np.exp(0.5 * np.asarray(logvar, np.float64))
  xs = np.asarray(x, np.float64).reshape(3, -1)
  for k in range(2):
    z = mean + std * np.asarray(eps[k], np.float64)
    logits = np.asarray(model.apply(variables, jnp.asarray(z, jnp.float32), y,
                                    method=lambda m, z, y: m.decoder(z, m._label(y))), np.float64)
    p = 1 / (1 + np.exp(-logits.reshape(3, -1)))
    log_px = (xs * np.log(p) + (1 - xs) * np.log1p(-p)).sum(1)
    log_pz = stats.norm.logpdf(z).sum(1)
    log_qz = stats.norm.logpdf(z, mean, std).sum(1)
    np.testing.assert_allclose(log_w[:, k], log_px + log_pz - log_qz, rtol=1e-4)


@pytest.mark.slow
def test_iwae_in_chunks_of_samples_equals_the_bound_over_all_of_them(mnist_slice):
  """K = 12 drawn 5 at a time (the third chunk's last 3 draws unused) is the K = 12 bound of
  exactly those draws: what lets K = 5000 run in the memory of 500."""
  from jax.scipy.special import logsumexp
  model, variables = _trained_vae(mnist_slice)
  images, labels = mnist_slice[0][:40], mnist_slice[1][:40]
  key = jax.random.PRNGKey(3)
  chunked = likelihood.iwae_nll(model, variables, images, labels, key, num_samples=12,
                                batch_size=40, samples_per_call=5)
  batch_key = jax.random.fold_in(key, 0)
  x, y = jnp.asarray(images, jnp.float32) / 255.0, jnp.asarray(labels)
  log_w = jnp.concatenate([
      model.apply(variables, x, y, 5, method="log_importance_weights",
                  rngs={"sample": jax.random.fold_in(batch_key, i)}) for i in range(3)], axis=1)
  direct = float(-(logsumexp(log_w[:, :12], axis=1) - jnp.log(12.0)).mean())
  np.testing.assert_allclose(chunked, direct, rtol=1e-6)
  one_call = likelihood.iwae_nll(model, variables, images, labels, key, num_samples=12,
                                 batch_size=40)  # K <= samples_per_call: one chunk, other draws
  assert abs(one_call - chunked) < 0.05 * chunked


@pytest.mark.slow
def test_decoding_the_samples_in_passes_keeps_the_draws_and_the_values(mnist_slice):
  """samples_per_pass (nets.map_over_samples) only regroups the decodes: for the conv VAE and the
  two-layer VAE, K = 7 in passes of 3 (a short last pass) gives the weights of all 7 at once, and
  the IWAE bound with decodes_per_pass 0 (all at once) and 60 agree."""
  x = jnp.asarray(mnist_slice[0][:20]) / 255.0
  y = jnp.asarray(mnist_slice[1][:20])
  rngs = {"sample": jax.random.PRNGKey(4)}
  for name, fields in (("conv_vae", {}), ("hvae", dict(hidden=(64,), hidden2=(32,),
                                                       latent_dims=(16, 8)))):
    model = models.get(name).build(tiny_config(name, **fields))
    variables = init_variables(model, x, y, method="losses")
    weights = compile_once(lambda v, per_pass: model.apply(
        v, x, y, 7, per_pass, method="log_importance_weights", rngs=rngs), static_argnums=1)
    at_once, in_passes = weights(variables, 0), weights(variables, 3)
    assert at_once.shape == in_passes.shape == (20, 7)
    np.testing.assert_allclose(in_passes, at_once, rtol=1e-5, err_msg=name)
    bounds = [likelihood.iwae_nll_per_image(model, variables, mnist_slice[0][:40],
                                            mnist_slice[1][:40], jax.random.PRNGKey(2), 12,
                                            batch_size=20, decodes_per_pass=d) for d in (0, 60)]
    np.testing.assert_allclose(bounds[1], bounds[0], rtol=1e-5, err_msg=name)
    assert np.all(np.isfinite(bounds[0]))
