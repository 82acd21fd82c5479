"""Variational auto-encoders: MLP (`vae`), convolutional (`conv_vae`), class-conditional (`cond_vae`).

Bernoulli likelihood on grayscale pixels in [0,1] (as in pytorch/examples), diagonal Gaussian
posterior, N(0, I) prior, analytic KL; `losses` is the one-sample negative ELBO in nats per image.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnistgen_jax import cpu_compiler, data
from mnistgen_jax.models.interface import Family
from mnistgen_jax.models.nets import (ConvChoice, Decoder, Encoder, bernoulli_nll, importance_weighted_losses,
                                      map_over_samples)
from mnistgen_jax.models.registry import register


def gaussian_kl(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over latent dims."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


class VAE(nn.Module):
  arch: str
  latent_dim: int
  hidden: Sequence[int]
  channels: Sequence[int]
  image_shape: Sequence[int]
  num_classes: int
  conditional: bool = False
  activation: str = "relu"
  objective: str = "elbo"       # elbo | iwae: the training loss over importance_samples draws
  importance_samples: int = 1   # k draws of z per image in the training loss
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  latent_interpolation = "slerp"  # Gaussian latents: the straight line's middle is atypical.

  def setup(self):
    self.encoder = Encoder(self.arch, 2 * self.latent_dim, self.hidden, self.channels,
                           self.num_classes, self.activation)
    self.decoder = Decoder(self.arch, self.hidden, self.channels, self.num_classes,
                           self.image_shape, self.activation)

  def _label(self, y):
    return y if self.conditional else None

  def posterior(self, x, y):
    mean, logvar = jnp.split(self.encoder(x, self._label(y)), 2, axis=-1)
    return mean, logvar

  def losses(self, x, y, train: bool = False):
    del train  # Same computation in training and evaluation.
    if self.objective == "iwae" or self.importance_samples > 1:  # nets.importance_weighted_losses
      return importance_weighted_losses(
          self.log_importance_weights(x, y, self.importance_samples), self.objective)
    mean, logvar = self.posterior(x, y)
    eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps  # Reparameterisation: gradients flow to mean/logvar.
    recon = -self.log_likelihood(x, z, self._label(y))
    kl = gaussian_kl(mean, logvar)
    return {"loss": recon + kl, "recon": recon, "kl": kl}

  def log_importance_weights(self, x, y, num_samples: int, samples_per_pass: int = 0, eps=None):
    """(B, K) log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x): the terms of the IWAE bound.
    samples_per_pass: as in the interface (nets.map_over_samples).
    eps (K, B, d): the standard-normal draws, sampled from the 'sample' stream when None."""
    mean, logvar = self.posterior(x, y)
    if eps is None:
      eps = jax.random.normal(self.make_rng("sample"), (num_samples,) + mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps  # (K, B, d)
    label = self._label(y)
    log_px = map_over_samples(lambda zk: self.log_likelihood(x, zk, label), z, samples_per_pass)
    log_pz = -0.5 * jnp.sum(z**2 + jnp.log(2 * jnp.pi), axis=-1)
    log_qz = -0.5 * jnp.sum(eps**2 + logvar + jnp.log(2 * jnp.pi), axis=-1)
    return (log_px + log_pz - log_qz).T

  def log_likelihood(self, x, z, label):
    """(B,) log p(x | z): independent Bernoulli pixels (a subclass may model them jointly)."""
    return -bernoulli_nll(self.decoder(z, label), x)

  def encode(self, x, y):
    return self.posterior(x, y)[0]

  def decode(self, z, y):
    return nn.sigmoid(self.decoder(z, self._label(y)))

  def reconstruct(self, x, y):
    return self.decode(self.encode(x, y), y)

  def sample(self, y):
    return self.decode(jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim)), y)


def encoder_decoder_fields(config) -> dict:
  """The module fields of the encoder/decoder families (vae, cond_vae, conv_vae, ae, pixel_vae)
  from their shared config fields (configs/vae.py)."""
  info = data.info(config.data.dataset)
  return dict(arch=config.model.arch, latent_dim=config.model.latent_dim,
              hidden=tuple(config.model.hidden), channels=tuple(config.model.channels),
              image_shape=info.image_shape, num_classes=info.num_classes,
              activation=config.model.activation, conv_choice=cpu_compiler.conv_choice(config))


def _builder(conditional: bool):
  def build(config, stage1=None):
    del stage1
    return VAE(**encoder_decoder_fields(config),
               conditional=conditional,
               objective=config.model.objective,
               importance_samples=config.model.importance_samples)
  return build


register(Family("vae", _builder(False), loss_name="neg_elbo",
                description="MLP VAE, pytorch/examples recipe (784-400-20)"))
register(Family("conv_vae", _builder(False), loss_name="neg_elbo",
                description="convolutional VAE (the seed's CVAE)"))
register(Family("cond_vae", _builder(True), loss_name="neg_elbo",
                description="class-conditional convolutional VAE (Sohn et al. 2015)"))
