"""`hvae`: a VAE with two stochastic layers (Burda et al. 2016, IWAE, section 5), MLPs.

Inference q(z1|x) q(z2|z1), generation p(z2) p(z1|z2) p(x|z1), every conditional a diagonal
Gaussian (Bernoulli for the pixels) from an MLP: x -> hidden -> z1, z1 -> hidden2 -> z2 and back,
the paper's 784-200-200-100 and 100-100-50 with tanh by default. The training loss is the k-sample
ELBO or IWAE bound (config.model.objective, config.model.importance_samples), both from
`log_importance_weights`, the same terms that the IWAE evaluation uses.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnistgen_jax import data
from mnistgen_jax.models.interface import Family
from mnistgen_jax.models.nets import (Decoder, Encoder, bernoulli_nll, gaussian_log_density,
                                      importance_weighted_losses, map_over_samples)
from mnistgen_jax.models.registry import register


class TwoLayerVAE(nn.Module):
  hidden: Sequence[int]       # x <-> z1
  hidden2: Sequence[int]      # z1 <-> z2
  latent_dims: Sequence[int]  # (z1, z2)
  image_shape: Sequence[int]
  activation: str = "tanh"
  objective: str = "elbo"
  importance_samples: int = 1
  conditional = False
  latent_interpolation = "slerp"

  def setup(self):
    d1, d2 = self.latent_dims
    mlp = lambda features, hidden: Encoder("mlp", features, hidden, (), 0, self.activation)
    self.q_z1 = mlp(2 * d1, self.hidden)    # from x
    self.q_z2 = mlp(2 * d2, self.hidden2)   # from z1
    self.p_z1 = mlp(2 * d1, tuple(reversed(self.hidden2)))  # from z2
    self.p_x = Decoder("mlp", self.hidden, (), 0, self.image_shape, self.activation)  # from z1

  @staticmethod
  def _split(h):
    return jnp.split(h, 2, axis=-1)

  def _apply_flat(self, net, z):
    """net on (..., d) codes: the MLPs take (B, d)."""
    out = net(z.reshape(-1, z.shape[-1]))
    return out.reshape(*z.shape[:-1], *out.shape[1:])

  def log_importance_weights(self, x, y, num_samples: int, samples_per_pass: int = 0):
    """(B, k) log p(x, z1, z2) - log q(z1, z2 | x) for k draws from q; samples_per_pass: as in
    the interface (the pixel decoder, the bulk of the work, runs that many samples at a time)."""
    del y
    k, batch = num_samples, x.shape[0]
    d1, d2 = self.latent_dims
    mean1, logvar1 = self._split(self.q_z1(x))
    z1 = mean1 + jnp.exp(0.5 * logvar1) * jax.random.normal(self.make_rng("sample"),
                                                             (k, batch, d1))
    mean2, logvar2 = self._split(self._apply_flat(self.q_z2, z1))
    z2 = mean2 + jnp.exp(0.5 * logvar2) * jax.random.normal(self.make_rng("sample"),
                                                            (k, batch, d2))
    prior_mean1, prior_logvar1 = self._split(self._apply_flat(self.p_z1, z2))
    log_px = map_over_samples(lambda z1k: -bernoulli_nll(self.p_x(z1k), x), z1, samples_per_pass)
    log_w = (log_px + gaussian_log_density(z1, prior_mean1, prior_logvar1)
             + gaussian_log_density(z2, 0.0, 0.0)
             - gaussian_log_density(z1, mean1, logvar1) - gaussian_log_density(z2, mean2, logvar2))
    return log_w.T

  def losses(self, x, y, train: bool = False):
    del train
    return importance_weighted_losses(
        self.log_importance_weights(x, y, self.importance_samples), self.objective)

  def encode(self, x, y):
    del y
    return self._split(self.q_z1(x))[0]  # the mean of q(z1 | x)

  def decode(self, z, y):
    del y
    return nn.sigmoid(self.p_x(z))

  def reconstruct(self, x, y):
    return self.decode(self.encode(x, y), y)

  def sample(self, y):
    z2 = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dims[1]))
    mean1, logvar1 = self._split(self.p_z1(z2))
    z1 = mean1 + jnp.exp(0.5 * logvar1) * jax.random.normal(self.make_rng("sample"), mean1.shape)
    return self.decode(z1, y)


def build(config, stage1=None):
  del stage1
  fields = config.model
  return TwoLayerVAE(hidden=tuple(fields.hidden), hidden2=tuple(fields.hidden2),
                     latent_dims=tuple(fields.latent_dims),
                     image_shape=data.info(config.data.dataset).image_shape,
                     activation=fields.activation, objective=fields.objective,
                     importance_samples=fields.importance_samples)


register(Family("hvae", build, loss_name="neg_bound",
                description="VAE with two stochastic layers (Burda et al. 2016)"))
