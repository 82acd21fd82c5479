"""Deterministic auto-encoder (`ae`), MLP or convolutional (config.arch).

It has no prior of its own: after training, a full-covariance Gaussian is fitted to the codes of the
training set (`fit_prior`) and `sample` decodes draws from it.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax.models.nets import Decoder, Encoder, bernoulli_nll
from mnistgen_jax.models.registry import Family, register


class AutoEncoder(nn.Module):
  arch: str = "mlp"
  latent_dim: int = 20
  hidden: Sequence[int] = (400,)
  channels: Sequence[int] = (32, 64)

  def setup(self):
    self.encoder = Encoder(self.arch, self.latent_dim, self.hidden, self.channels)
    self.decoder = Decoder(self.arch, self.hidden, self.channels)
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


def build(config):
  return AutoEncoder(arch=config.arch, latent_dim=config.latent_dim, hidden=tuple(config.hidden),
                     channels=tuple(config.channels))


register(Family("ae", build, dict(arch="mlp", hidden=(400,), latent_dim=20),
                fit_prior=fit_gaussian_prior, loss_name="recon_nll",
                description="deterministic auto-encoder; samples via a Gaussian fitted to its codes"))
