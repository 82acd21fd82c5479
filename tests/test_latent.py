"""Latent tools: lerp/slerp numerics, the PCA projection, decode consistency."""
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import init_variables, tiny_config
from mnistgen_jax import latent, models
from mnistgen_jax.train import to_float


def test_lerp_endpoints_and_midpoint():
  a, b = jnp.array([1.0, 2.0]), jnp.array([3.0, -2.0])
  path = latent.lerp(a, b, jnp.array([0.0, 0.5, 1.0]))
  np.testing.assert_allclose(path, [[1, 2], [2, 0], [3, -2]])


def test_slerp_follows_the_great_circle():
  a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
  t = jnp.linspace(0, 1, 7)
  path = latent.slerp(a, b, t)
  angles = t * np.pi / 2
  np.testing.assert_allclose(path, np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(path, axis=1), 1.0, atol=1e-6)  # lerp's would sag.


def test_slerp_of_parallel_vectors_is_lerp():
  a = jnp.array([1.0, 2.0, 3.0])
  np.testing.assert_allclose(latent.slerp(a, 2 * a, jnp.array([0.0, 0.5, 1.0])),
                             latent.lerp(a, 2 * a, jnp.array([0.0, 0.5, 1.0])), rtol=1e-6)


def test_project_2d_matches_the_covariance_eigenvectors():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(500, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
  points, labels = latent.project_2d(codes)
  eigvals, eigvecs = np.linalg.eigh(np.cov(codes, rowvar=False))
  top = eigvecs[:, ::-1][:, :2]
  expected = (codes - codes.mean(0)) @ top
  np.testing.assert_allclose(np.abs(points), np.abs(expected), rtol=1e-6, atol=1e-8)  # Up to sign.
  assert labels[0].startswith("PC1 (") and labels[1].startswith("PC2 (")
  two_d = rng.normal(size=(10, 2))
  np.testing.assert_array_equal(latent.project_2d(two_d)[0], two_d)


@pytest.mark.parametrize("name", ["ae", "vae", pytest.param("cond_vae", marks=pytest.mark.slow),
                                  pytest.param("vqvae", marks=pytest.mark.slow)])
def test_decode_of_encode_is_reconstruct_and_paths_start_at_the_endpoints(mnist_slice, name):
  config = tiny_config(name)
  family = models.get(name)
  model = family.build(config)
  x, y = to_float(jnp.asarray(mnist_slice[0][:2])), jnp.asarray(mnist_slice[1][:2])
  variables = init_variables(model, x, y)
  codes = model.apply(variables, x, y, method="encode")
  np.testing.assert_allclose(model.apply(variables, codes, y, method="decode"),
                             model.apply(variables, x, y, method="reconstruct"), atol=1e-6)
  strip = latent.interpolate(model, variables, x, y, 5, model.latent_interpolation,
                             model.conditional)
  rows = 2 if model.conditional else 1
  assert strip.shape == (rows * 7, 28, 28, 1)
  np.testing.assert_array_equal(strip[0], x[0])
  np.testing.assert_allclose(strip[1], model.apply(variables, codes[:1], y[:1], method="decode")[0],
                             atol=1e-5)  # The path starts at x0's code...
  np.testing.assert_allclose(strip[5], model.apply(variables, codes[1:], y[:1], method="decode")[0],
                             atol=1e-5)  # ...and ends at x1's.
