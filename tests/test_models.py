import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import compile_once, initial_state, tiny_config
from mnistgen_jax import models
from mnistgen_jax import train as train_lib
from mnistgen_jax.models.ae import fit_gaussian_prior
from mnistgen_jax.models.vae import gaussian_kl

FAMILIES = ["ae", "vae", "conv_vae", "cond_vae"]


def _model_and_state(name, **overrides):
  config = tiny_config(name, **overrides)
  family = models.get(name)
  model = family.build(config)
  tx, state = initial_state(family, model, config, total_steps=100)
  return config, model, tx, state


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_shapes_and_finite_values(name, arch, mnist_slice):
  config, model, _, state = _model_and_state(name, arch=arch)
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:8]))
  y = jnp.asarray(mnist_slice[1][:8])
  rngs = {"sample": jax.random.PRNGKey(1)}
  losses = model.apply(state.variables(), x, y, method="losses", rngs=rngs)
  assert all(v.shape == (8,) and bool(jnp.isfinite(v).all()) for v in losses.values())
  assert float(losses["loss"].mean()) > 0
  for method in ("reconstruct", "sample"):
    args = (x, y) if method == "reconstruct" else (y,)
    out = model.apply(state.variables(), *args, method=method, rngs=rngs)
    assert out.shape == (8, 28, 28, 1)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
  codes = model.apply(state.variables(), x, y, method="encode")
  assert codes.shape == (8, config.model.latent_dim)


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_decreases_on_real_mnist(name, mnist_slice):
  config, model, tx, state = _model_and_state(name, arch="conv")
  step = compile_once(train_lib.make_train_step(model, tx))
  images = train_lib.to_float(jnp.asarray(mnist_slice[0][:64]))
  labels = jnp.asarray(mnist_slice[1][:64])
  first = None
  for _ in range(40):
    state, metrics = step(state, images, labels)
    first = float(metrics["loss"]) if first is None else first
    assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["loss"]) < 0.8 * first, (first, float(metrics["loss"]))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_parameter_gets_a_gradient(name, mnist_slice):
  _, model, _, state = _model_and_state(name, arch="conv")
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:16]))
  y = jnp.asarray(mnist_slice[1][:16])

  def loss(params):
    out = model.apply({**state.variables(), "params": params}, x, y, method="losses",
                      rngs={"sample": jax.random.PRNGKey(0)})
    return out["loss"].mean()

  grads = compile_once(jax.grad(loss))(state.params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0, path


def test_gaussian_kl_against_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 5)).astype(np.float32)
  logvar = rng.normal(scale=0.5, size=(3, 5)).astype(np.float32)
  kl = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
  std = np.exp(0.5 * logvar.astype(np.float64))
  # Closed form per dimension: log(1/s) + (s^2 + m^2)/2 - 1/2.
  closed = np.sum(-np.log(std) + (std**2 + mean**2) / 2 - 0.5, axis=-1)
  np.testing.assert_allclose(kl, closed, rtol=1e-5)
  # Monte Carlo E_q[log q(z) - log p(z)] with scipy densities.
  z = mean + std * rng.normal(size=(200000, 3, 5))
  mc = (stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z)).sum(-1).mean(0)
  np.testing.assert_allclose(kl, mc, rtol=0.02, atol=0.02)
  assert float(gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


def test_bernoulli_nll_is_optax_bce_summed():
  from mnistgen_jax.models.nets import bernoulli_nll
  logits = jnp.linspace(-30, 30, 784).reshape(1, 28, 28, 1)
  x = jnp.linspace(0, 1, 784).reshape(1, 28, 28, 1)
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  ref = -(np.asarray(x) * np.log(p) + (1 - np.asarray(x)) * np.log1p(-p)).sum()
  np.testing.assert_allclose(float(bernoulli_nll(logits, x)[0]), ref, rtol=1e-4)


def test_bernoulli_nll_sums_the_pixels_close_to_float64(mnist_slice):
  # Real digits against broad logits: the 784-pixel sum of each image, jitted as a model step
  # computes it, within 1e-4 nats on average of the float64 sum of the same float32 terms (the
  # product with ones: 4.5e-5 measured; XLA's fused reduce: 2.0e-4).
  from mnistgen_jax.models.nets import bernoulli_nll, sigmoid_cross_entropy
  x = jnp.asarray(mnist_slice[0], jnp.float32) / 255.0
  logits = jax.random.normal(jax.random.PRNGKey(0), x.shape) * 4.0 - 2.0
  terms = np.asarray(sigmoid_cross_entropy(logits, x), np.float64)
  exact = terms.reshape(len(terms), -1).sum(1)
  got = np.asarray(compile_once(bernoulli_nll)(logits, x))
  assert got.shape == (len(x),) and got.dtype == np.float32
  error = np.abs(got - exact)
  assert error.mean() < 1e-4 and error.max() < 5e-4, (error.mean(), error.max())


def test_sigmoid_cross_entropy_and_its_gradients_against_float64(mnist_slice):
  # Real grayscale digits against logits from -100 to 100: values and both derivatives within
  # float32 rounding of the float64 formulas, finite everywhere, and within rounding of optax's.
  import optax
  from mnistgen_jax.models.nets import sigmoid_cross_entropy
  x = jnp.asarray(mnist_slice[0][:8], jnp.float32).reshape(8, -1) / 255.0
  logits = jnp.concatenate([jax.random.normal(jax.random.PRNGKey(0), (6, 784)) * 8.0,
                            jnp.linspace(-100.0, 100.0, 2 * 784).reshape(2, 784)])
  l64, x64 = np.asarray(logits, np.float64), np.asarray(x, np.float64)
  value = np.maximum(l64, 0) - x64 * l64 + np.log1p(np.exp(-np.abs(l64)))
  sigmoid = 1 / (1 + np.exp(-l64))
  weights = np.arange(1.0, 785.0) / 784
  d_logits, d_x = jax.grad(lambda l, x: jnp.sum(sigmoid_cross_entropy(l, x) * weights),
                           argnums=(0, 1))(logits, x)
  ours = np.asarray(sigmoid_cross_entropy(logits, x))
  # max(l, 0) - x l cancels: float32's rounding of x l (~|l| * 6e-8) bounds any formula's error.
  rounding = 1e-6 + 3e-7 * np.abs(l64)
  assert np.all(np.abs(ours - value) <= rounding)
  np.testing.assert_allclose(d_logits, (sigmoid - x64) * weights, rtol=1e-6, atol=3e-7)
  np.testing.assert_allclose(d_x, -l64 * weights, rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(ours - np.asarray(optax.sigmoid_binary_cross_entropy(logits, x)))
                <= 2 * rounding)
  assert np.all(np.isfinite(np.asarray(d_logits))) and np.all(np.isfinite(np.asarray(d_x)))


def test_conditional_sampling_follows_the_label():
  _, model, _, state = _model_and_state("cond_vae")
  key = {"sample": jax.random.PRNGKey(3)}
  a = model.apply(state.variables(), jnp.zeros(4, jnp.int32), method="sample", rngs=key)
  b = model.apply(state.variables(), jnp.full(4, 7, jnp.int32), method="sample", rngs=key)
  assert float(jnp.abs(a - b).max()) > 1e-4
  _, model, _, state = _model_and_state("vae")
  a = model.apply(state.variables(), jnp.zeros(4, jnp.int32), method="sample", rngs=key)
  b = model.apply(state.variables(), jnp.full(4, 7, jnp.int32), method="sample", rngs=key)
  np.testing.assert_array_equal(a, b)


def test_ae_prior_is_fitted_to_codes():
  codes = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 3.0], size=(20000, 2))
  variables = fit_gaussian_prior({"params": {}}, codes)
  prior = variables["prior"]
  np.testing.assert_allclose(prior["mean"], [1.0, -2.0], atol=0.06)
  cov = np.asarray(prior["scale_tril"]) @ np.asarray(prior["scale_tril"]).T
  np.testing.assert_allclose(cov, np.cov(codes, rowvar=False), rtol=1e-4, atol=1e-5)


def test_unknown_model_is_a_clear_error():
  with pytest.raises(ValueError, match=re.escape(
      "unknown model 'gan'; choose one of: " + ", ".join(models.names()))):
    models.get("gan")
