"""`pixel_vae`: a VAE whose decoder is a small PixelCNN (PixelVAE, Gulrajani et al. 2017).

The VAEs of vae.py and hvae.py decode every pixel independently given z, so whatever z does not
carry (stroke texture, the exact binarized pixels) costs nats; here

  p(x | z) = prod_i Bernoulli(x_i | x_<i, z),  pixels in raster order,

a convolutional network (nets.Decoder) maps z to a 28x28xC feature map and a PixelCNN of masked
convolutions (van den Oord et al. 2016; nets.Conv with causal='A', then gated residual layers with
causal='B') reads the image and those features at every layer. Everything else is the conv VAE's
(vae.VAE): the encoder q(z | x), the N(0, I) prior, the ELBO or IWAE loss and the importance
weights of the likelihood bound, which call `log_likelihood`. Training and the bound are one
network pass per image (teacher forcing: the true earlier pixels are the input); drawing an image
takes one pass per pixel (784), so sampling and reconstruction are slow on a CPU.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import Conv, Decoder, Encoder, bernoulli_nll
from mnistgen_jax.models.registry import register
from mnistgen_jax.models.vae import VAE, encoder_decoder_fields


class PixelCNN(nn.Module):
  """(x, features) -> Bernoulli logits of every pixel given the pixels before it and the features.

  x: (B, H, W, C) binary image; features: (B, H, W, F), at every position (they come from z, not
  from x, so they may see the whole image area). Gated residual layers (tanh * sigmoid, as in the
  gated PixelCNN) with the features added to each layer's gates."""
  channels: int
  layers: int
  first_kernel: int = 7

  @nn.compact
  def __call__(self, x, features):
    h = Conv(self.channels, self.first_kernel, causal="A")(x) + nn.Dense(self.channels)(features)
    for _ in range(self.layers):
      gates = Conv(2 * self.channels, 3, causal="B")(nn.relu(h))
      tanh_gate, sigmoid_gate = jnp.split(gates + nn.Dense(2 * self.channels)(features), 2, -1)
      h = h + nn.Dense(self.channels)(jnp.tanh(tanh_gate) * nn.sigmoid(sigmoid_gate))
    h = nn.relu(nn.Dense(self.channels)(nn.relu(h)))
    return nn.Dense(x.shape[-1])(h)


class PixelVAE(VAE):
  pixel_channels: int = 32  # C: width of the PixelCNN and of the feature map decoded from z
  pixel_layers: int = 3     # gated residual 3x3 layers after the 7x7 type-A one
  pixel_kernel: int = 7     # the first (type-A) layer's kernel

  def setup(self):
    height, width, _ = self.image_shape
    self.encoder = Encoder(self.arch, 2 * self.latent_dim, self.hidden, self.channels, 0,
                           self.activation)
    self.decoder = Decoder(self.arch, self.hidden, self.channels, 0,
                           (height, width, self.pixel_channels), self.activation)
    self.pixelcnn = PixelCNN(self.pixel_channels, self.pixel_layers, self.pixel_kernel)

  def log_likelihood(self, x, z, label):
    del label
    return -bernoulli_nll(self.pixelcnn(x, self.decoder(z)), x)

  def receptive_rows(self) -> int:
    """How many rows (its own included) a pixel's logit can depend on: the masks never look
    down, the first layer looks pixel_kernel // 2 rows up and each 3x3 layer one more."""
    return min(self.image_shape[0], self.pixel_kernel // 2 + self.pixel_layers + 1)

  def draw_pixels(self, z, key=None):
    """Images from p(x | z), one pixel after the other in raster order (H * W network passes,
    each over only the receptive_rows() rows that end at the pixel's row: 4x fewer FLOPs for
    the default config, 2.8x for the accelerator preset). key=None: each pixel takes its more
    likely value (deterministic: decode, reconstruct)."""
    features = self.decoder(z)
    pure = self.pixelcnn.clone(parent=None)  # A pure function of its weights: fori_loop-safe.
    params = self.pixelcnn.variables["params"]
    height, width, depth = self.image_shape
    rows = self.receptive_rows()

    def next_pixel(i, x):
      row, col = i // width, i % width
      # The window's zero padding above its top row is out of the pixel's reach, and rows below
      # the pixel (still blank) are masked out: the logit is the whole image's.
      top = jnp.clip(row - rows + 1, 0, height - rows)
      window = jax.lax.dynamic_slice_in_dim(x, top, rows, axis=1)
      window_features = jax.lax.dynamic_slice_in_dim(features, top, rows, axis=1)
      logits = pure.apply({"params": params}, window, window_features)[:, row - top, col, :]
      if key is None:
        pixel = logits > 0
      else:
        pixel = jax.random.bernoulli(jax.random.fold_in(key, i), nn.sigmoid(logits))
      return x.at[:, row, col, :].set(pixel.astype(x.dtype))

    blank = jnp.zeros((z.shape[0], height, width, depth), features.dtype)
    return jax.lax.fori_loop(0, height * width, next_pixel, blank)

  def decode(self, z, y):
    del y
    return self.draw_pixels(z)

  def sample(self, y):
    z = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim))
    return self.draw_pixels(z, self.make_rng("sample"))


def kl_warmup(steps: int):
  """The objective recon + min(1, (step + 1) / steps) * KL (Sonderby et al. 2016): while the KL
  costs little, the encoder learns to put information in z before the PixelCNN learns to do
  without it (from the start, its KL fell to ~0.1 nats in 40 steps: posterior collapse)."""
  return lambda terms, step: terms["recon"] + jnp.minimum(1.0, (step + 1) / steps) * terms["kl"]


class PixelVAETraining(Training):
  def step(self, model, tx, config):
    if not config.model.kl_warmup_steps:
      return super().step(model, tx, config)
    return train_lib.make_train_step(model, tx, objective=kl_warmup(config.model.kl_warmup_steps))


def build(config, stage1=None):
  del stage1
  fields = {**encoder_decoder_fields(config), "num_classes": 0}  # unconditional
  return PixelVAE(**fields,
                  objective=config.model.objective,
                  importance_samples=config.model.importance_samples,
                  pixel_channels=config.model.pixel_channels,
                  pixel_layers=config.model.pixel_layers,
                  pixel_kernel=config.model.pixel_kernel)


register(Family("pixel_vae", build, PixelVAETraining(), loss_name="neg_elbo",
                description="VAE with a PixelCNN decoder (PixelVAE, Gulrajani et al. 2017)"))
