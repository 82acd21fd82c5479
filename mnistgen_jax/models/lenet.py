"""`lenet`: the small digit classifier whose penultimate layer is the feature space of fid_lenet.

Trained with the shared loop (mnistgen-train-classifier); random +-2 pixel shifts
augment training. Not generative: it has `losses` and `features`/`probs`, no `sample`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mnistgen_jax import cpu_compiler, data
from mnistgen_jax.models.interface import Family
from mnistgen_jax.models.nets import Conv, ConvChoice
from mnistgen_jax.models.registry import register

FEATURE_DIM = 128


def random_shift(key, x, max_shift: int = 2):
  """Each image rolled by its own random (dy, dx) in [-max_shift, max_shift] (MNIST borders are 0)."""
  shifts = jax.random.randint(key, (x.shape[0], 2), -max_shift, max_shift + 1)
  return jax.vmap(lambda img, s: jnp.roll(img, s, axis=(0, 1)))(x, shifts)


class LeNet(nn.Module):
  num_classes: int
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  conditional = False

  def setup(self):
    self.convs = [Conv(32, 3), Conv(64, 4, stride=2), Conv(64, 4, stride=2)]  # 28 -> 14 -> 7
    self.dense = nn.Dense(FEATURE_DIM)
    self.head = nn.Dense(self.num_classes)

  def features(self, x):
    """The penultimate layer: (B, 128) non-negative features."""
    for conv in self.convs:
      x = nn.relu(conv(x))
    return nn.relu(self.dense(x.reshape(x.shape[0], -1)))

  def __call__(self, x):
    return self.head(self.features(x))

  def features_and_probs(self, x):
    features = self.features(x)
    return features, nn.softmax(self.head(features))

  def losses(self, x, y, train: bool = False):
    if train:
      x = random_shift(self.make_rng("sample"), x)
    logits = self(x)
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, y),
            "error": (logits.argmax(-1) != y).astype(jnp.float32)}


register(
    Family("lenet",
           lambda config, stage1=None: LeNet(
               data.info(config.data.dataset).num_classes, cpu_compiler.conv_choice(config)),
           description="evaluation classifier (features for fid_lenet)"))
