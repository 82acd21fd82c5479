"""Deterministic auto-encoder (`ae`), MLP or convolutional (config.model.arch).

It has no prior of its own: before each checkpoint, a full-covariance Gaussian is fitted to the
codes of the training set (FittedGaussianPrior) and `sample` decodes draws from it.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import ConvChoice, Decoder, Encoder, bernoulli_nll
from mnistgen_jax.models.registry import register
from mnistgen_jax.models.vae import encoder_decoder_fields


class AutoEncoder(nn.Module):
  arch: str
  latent_dim: int
  hidden: Sequence[int]
  channels: Sequence[int]
  image_shape: Sequence[int]
  num_classes: int
  activation: str = "relu"
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  conditional = False
  latent_interpolation = "lerp"

  def setup(self):
    self.encoder = Encoder(self.arch, self.latent_dim, self.hidden, self.channels,
                           self.num_classes, self.activation)
    self.decoder = Decoder(self.arch, self.hidden, self.channels, self.num_classes,
                           self.image_shape, self.activation)
    d = self.latent_dim
    self.prior_mean = self.variable("prior", "mean", jnp.zeros, (d,))
    self.prior_scale_tril = self.variable("prior", "scale_tril", jnp.eye, d)

  def losses(self, x, y, train: bool = False):
    del train  # Same computation in training and evaluation.
    recon = bernoulli_nll(self.decoder(self.encoder(x)), x)
    return {"loss": recon, "recon": recon}

  def encode(self, x, y):
    return self.encoder(x)

  def decode(self, z, y):
    return nn.sigmoid(self.decoder(z))

  def reconstruct(self, x, y):
    return self.decode(self.encoder(x), y)

  def sample(self, y):
    eps = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim))
    z = self.prior_mean.value + eps @ self.prior_scale_tril.value.T
    return nn.sigmoid(self.decoder(z))


def fit_gaussian_prior(variables, codes: np.ndarray):
  """Moment-matched full-covariance Gaussian over the training codes."""
  codes = np.asarray(codes, np.float64)
  cov = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(codes.shape[1])
  prior = {"mean": jnp.asarray(codes.mean(0), jnp.float32),
           "scale_tril": jnp.asarray(np.linalg.cholesky(cov), jnp.float32)}
  return {**variables, "prior": prior}


class FittedGaussianPrior(Training):
  """Shared training; before each checkpoint, the Gaussian prior is refitted to the codes."""

  def fit_prior(self, model, config):
    encode = train_lib.make_applier(model, "encode", config.train.eval_batch_size)
    return lambda variables, images, labels: fit_gaussian_prior(
        variables, np.asarray(encode(variables, images, labels)))


def build(config, stage1=None):
  del stage1
  return AutoEncoder(**encoder_decoder_fields(config))


register(Family("ae", build, FittedGaussianPrior(), loss_name="recon_nll",
                description="deterministic auto-encoder; samples via a Gaussian fitted to its codes"))
