"""`spatial_vae`: a VAE whose code is a small grid (7x7xC for MNIST), the stage 1 of latent
flow matching in the style of latent diffusion (Rombach et al. 2022).

The code keeps the image's layout: two stride-2 convolutions take 28x28 to 7x7, a 3x3
convolution gives each position C channels of posterior mean and log-variance, and the decoder
mirrors it with sub-pixel upsampling (nets.Upsample). The KL term is weighted by
config.model.kl_weight < 1: a light regulariser that keeps the codes smooth and near N(0, I)
in scale while letting through enough detail for near-lossless reconstructions (the prior, not
N(0, I), then models the codes: models/latent_flow.py). -ELBO (at weight 1) is reported too.

Codes are flat (B, h * w * C) like every family's (the interface's encode/decode); `code_shape`
gives the grid, which a prior over the codes may use (latent_flow's U-Net).
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mnistgen_jax import cpu_compiler, data
from mnistgen_jax.models.interface import Family
from mnistgen_jax.models.nets import ACTIVATIONS, Conv, Upsample
from mnistgen_jax.models.registry import register
from mnistgen_jax.models.vae import VAE


class GridEncoder(nn.Module):
  """Image (B, H, W, 1) -> (B, H / 2^n, W / 2^n, features): a stride-2 convolution per width of
  `channels`, then `blocks` residual 3x3 convolutions at the lowest resolution."""
  channels: Sequence[int]
  features: int
  blocks: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, x, y=None):
    del y  # unconditional
    act = ACTIVATIONS[self.activation]
    h = x
    for c in self.channels:
      h = act(Conv(c, 4, stride=2)(h))
    for _ in range(self.blocks):
      h = h + Conv(self.channels[-1])(act(Conv(self.channels[-1])(h)))
    return Conv(self.features)(act(h))


class GridDecoder(nn.Module):
  """Flat code (B, h * w * C) -> Bernoulli logits (B, H, W, 1); mirrors GridEncoder."""
  channels: Sequence[int]
  code_shape: Sequence[int]   # (h, w, C)
  image_channels: int
  blocks: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, z, y=None):
    del y
    act = ACTIVATIONS[self.activation]
    h = Conv(self.channels[-1])(z.reshape(-1, *self.code_shape))
    for _ in range(self.blocks):
      h = h + Conv(self.channels[-1])(act(Conv(self.channels[-1])(act(h))))
    for c in reversed(self.channels[:-1]):
      h = Upsample(c)(act(h))
    return Upsample(self.image_channels)(act(h))


class SpatialVAE(VAE):
  latent_channels: int = 4
  blocks: int = 1
  kl_weight: float = 0.1

  @property
  def code_shape(self) -> tuple:
    """(h, w, C) of the code grid."""
    h, w = (s // 2 ** len(self.channels) for s in self.image_shape[:2])
    return (h, w, self.latent_channels)

  def setup(self):
    self.encoder = GridEncoder(self.channels, 2 * self.latent_channels, self.blocks,
                               self.activation)
    self.decoder = GridDecoder(self.channels, self.code_shape, self.image_shape[-1], self.blocks,
                               self.activation)

  def posterior(self, x, y):
    stats = self.encoder(x)
    mean, logvar = jnp.split(stats.reshape(stats.shape[0], -1, 2 * self.latent_channels), 2, -1)
    return mean.reshape(mean.shape[0], -1), logvar.reshape(logvar.shape[0], -1)

  def losses(self, x, y, train: bool = False):
    terms = super().losses(x, y, train)
    if "kl" not in terms:  # the importance-weighted objective: no KL term to weigh
      return terms
    return {**terms, "loss": terms["recon"] + self.kl_weight * terms["kl"],
            "neg_elbo": terms["recon"] + terms["kl"]}


def build(config, stage1=None):
  del stage1
  info = data.info(config.data.dataset)
  fields = config.model
  halved = [s // 2 ** len(fields.channels) for s in info.image_shape[:2]]
  return SpatialVAE(arch="spatial", latent_dim=halved[0] * halved[1] * fields.latent_channels,
                    hidden=(), channels=tuple(fields.channels), image_shape=info.image_shape,
                    num_classes=info.num_classes, activation=fields.activation,
                    conv_choice=cpu_compiler.conv_choice(config),
                    latent_channels=fields.latent_channels, blocks=fields.blocks,
                    kl_weight=fields.kl_weight)


register(Family("spatial_vae", build, loss_name="weighted_neg_elbo",
                description="VAE with a 7x7xC grid code (latent-diffusion style stage 1)"))
