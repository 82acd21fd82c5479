"""Encoder and decoder networks shared by the auto-encoder families (MLP and convolutional)."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import optax

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)


def with_label(h: jnp.ndarray, y, num_classes: int = NUM_CLASSES) -> jnp.ndarray:
  """Concatenates a one-hot label to flat features (class-conditional models); y=None passes h."""
  if y is None:
    return h
  return jnp.concatenate([h, nn.one_hot(y, num_classes, dtype=h.dtype)], axis=-1)


class Encoder(nn.Module):
  """Image (B,28,28,1) in [0,1] -> (B, features); `arch` is 'mlp' or 'conv'."""
  arch: str
  features: int
  hidden: Sequence[int] = (400,)
  channels: Sequence[int] = (32, 64)

  @nn.compact
  def __call__(self, x, y=None):
    h = x
    if self.arch == "conv":
      for c in self.channels:  # Each stride-2 conv halves the resolution: 28 -> 14 -> 7.
        h = nn.relu(nn.Conv(c, (4, 4), strides=(2, 2))(h))
    h = with_label(h.reshape(h.shape[0], -1), y)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.features)(h)


class Decoder(nn.Module):
  """Code (B, d) -> Bernoulli logits (B,28,28,1); mirrors Encoder."""
  arch: str
  hidden: Sequence[int] = (400,)
  channels: Sequence[int] = (32, 64)

  @nn.compact
  def __call__(self, z, y=None):
    h = with_label(z, y)
    for width in reversed(self.hidden):
      h = nn.relu(nn.Dense(width)(h))
    if self.arch == "mlp":
      return nn.Dense(28 * 28)(h).reshape(-1, *IMAGE_SHAPE)
    side = 28 // 2 ** len(self.channels)
    h = nn.relu(nn.Dense(side * side * self.channels[-1])(h))
    h = h.reshape(-1, side, side, self.channels[-1])
    for c in reversed(self.channels[:-1]):
      h = nn.relu(nn.ConvTranspose(c, (4, 4), strides=(2, 2))(h))
    return nn.ConvTranspose(1, (4, 4), strides=(2, 2))(h)


def bernoulli_nll(logits: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """Per-image -log p(x | logits), summed over pixels (nats); x in [0,1] (grayscale BCE)."""
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, x)
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(-1)
