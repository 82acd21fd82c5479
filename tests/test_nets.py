import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistgen_jax.models import nets


@pytest.mark.parametrize("size,kernel,stride", [(28, 4, 2), (14, 4, 2), (7, 3, 1), (28, 3, 1),
                                                (7, 4, 2), (9, 5, 3)])
def test_patch_conv_equals_flax_conv(size, kernel, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 5))
  ours = nets.Conv(7, kernel, stride, impl="patches")
  params = ours.init(jax.random.PRNGKey(1), x)
  ref = nn.Conv(7, (kernel, kernel), strides=(stride, stride), padding="SAME")
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nets.Conv(7, kernel, stride, impl="xla").apply(params, x),
                             ref.apply(params, x), rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_depth_to_space_places_channels_as_2x2_blocks():
  x = jnp.arange(2 * 3 * 3 * 8).reshape(2, 3, 3, 8)
  y = nets.depth_to_space(x)
  assert y.shape == (2, 6, 6, 2)
  # Output pixel (2i+a, 2j+b) channel c is input pixel (i, j) channel (2a+b)*C + c.
  for a in range(2):
    for b in range(2):
      np.testing.assert_array_equal(y[:, a::2, b::2, :], x[..., (2 * a + b) * 2:(2 * a + b + 1) * 2])


def test_upsample_doubles_resolution():
  x = jnp.ones((2, 7, 7, 3))
  up = nets.Upsample(5)
  assert up.apply(up.init(jax.random.PRNGKey(0), x), x).shape == (2, 14, 14, 5)
