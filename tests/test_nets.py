import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compile_once
from mnistgen_jax.models import nets


@pytest.mark.parametrize("size,kernel,stride", [
    (28, 4, 2), (14, 4, 2), pytest.param(7, 3, 1, marks=pytest.mark.slow), (28, 3, 1), (7, 4, 2),
    pytest.param(9, 5, 3, marks=pytest.mark.slow)])
def test_patch_conv_equals_flax_conv(size, kernel, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 5))
  ref = nn.Conv(7, (kernel, kernel), strides=(stride, stride), padding="SAME")
  params = ref.init(jax.random.PRNGKey(1), x)
  modules = {"flax": ref, **{impl: nets.Conv(7, kernel, stride, impl=impl)
                              for impl in ("patches", "xla", "taps")}}

  def outputs_and_gradients(params, x):  # Every implementation's, in one computation.
    loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
    return {name: (module.apply(params, x), jax.grad(loss(module), argnums=(0, 1))(params, x))
            for name, module in modules.items()}

  results = compile_once(outputs_and_gradients)(params, x)
  y_ref, g_ref = results.pop("flax")
  for y, g in results.values():
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,kernel,stride,channels,features",
                         [(14, 3, 1, 32, 4), (28, 3, 1, 32, 1), (7, 1, 1, 64, 16),
                          pytest.param(9, 4, 2, 6, 3, marks=pytest.mark.slow)])
def test_taps_conv_equals_native_where_auto_picks_it(size, kernel, stride, channels, features):
  """The last layers to few channels and 1x1 convolutions (the shapes 'auto' sends to taps on CPU),
  an even kernel with stride included, against XLA's convolution."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, size, size, channels))
  k = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, channels, features))
  native = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  taps = lambda x, k: nets.shifted_taps_conv(x, k, stride)
  dy = jax.random.normal(jax.random.PRNGKey(2), jax.eval_shape(native, x, k).shape)
  both = compile_once(lambda x, k: [(f(x, k), jax.vjp(f, x, k)[1](dy)) for f in (taps, native)])
  (y_taps, g_taps), (y_native, g_native) = both(x, k)
  np.testing.assert_allclose(y_taps, y_native, rtol=1e-5, atol=1e-4)
  for a, b in zip(g_taps, g_native):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_auto_conv_impl_by_shape_and_loop():
  on_cpu = jax.default_backend() == "cpu"
  assert nets.auto_conv_impl(3, 32, 4) == ("taps" if on_cpu else "xla")   # 36 <= 2 * 32
  assert nets.auto_conv_impl(1, 64, 64) == ("taps" if on_cpu else "xla")  # a 1x1 convolution
  assert nets.auto_conv_impl(3, 64, 128) == "xla"                          # 1152 > 128
  scanned = nets.ConvChoice(scanned_step=True)
  assert nets.auto_conv_impl(3, 64, 128, scanned) == ("patches" if on_cpu else "xla")
  assert nets.auto_conv_impl(3, 32, 4, scanned) == ("taps" if on_cpu else "xla")
  assert nets.auto_conv_impl(3, 32, 4, nets.ConvChoice(taps_ratio=0)) == "xla"  # taps off


def test_convs_read_the_conv_choice_of_their_family_module():
  class Family(nn.Module):
    conv_choice: nets.ConvChoice = nets.ConvChoice()

    @nn.compact
    def __call__(self, x):
      return nets.Upsample(2)(x)  # Conv inside Upsample: two levels below the field.

  seen = []

  class Probe(nn.Module):  # Records the choice it reads (flax freezes list attributes).
    @nn.compact
    def __call__(self, x):
      seen.append(nets.nearest_conv_choice(self))
      return x

  x = jnp.ones((1, 4, 4, 3))
  choice = nets.ConvChoice(taps_ratio=0.5, scanned_step=True)
  model = Family(conv_choice=choice)
  y = model.apply(model.init(jax.random.PRNGKey(0), x), x)
  assert y.shape == (1, 8, 8, 2)
  Probe().apply({}, x)
  assert seen == [nets.ConvChoice()]  # No enclosing family: the default.

  class Holder(nn.Module):
    conv_choice: nets.ConvChoice = nets.ConvChoice()

    @nn.compact
    def __call__(self, x):
      return Probe()(x)

  seen.clear()
  Holder(conv_choice=choice).apply({}, x)
  assert seen == [choice]

  class Prior(nn.Module):  # A frozen stage 1 with its own choice inside a scanned prior's step.
    conv_choice: nets.ConvChoice = nets.ConvChoice()

    @nn.compact
    def __call__(self, x):
      return Holder(conv_choice=nets.ConvChoice(taps_ratio=3.0))(x)

  seen.clear()
  Prior(conv_choice=nets.ConvChoice(scanned_step=True)).apply({}, x)
  assert seen == [nets.ConvChoice(taps_ratio=3.0, scanned_step=True)]


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
