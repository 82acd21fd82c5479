"""Sample-quality metrics on classifier features: KID, precision/recall, classifier score."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _polynomial_kernel(a, b):
  """k(x, y) = (x.y / d + 1)^3, the kernel of Binkowski et al. 2018."""
  return (a @ b.T / a.shape[1] + 1.0) ** 3


@functools.partial(jax.jit, static_argnames=("num_subsets", "subset_size"))
def _kid_subsets(real, fake, key, num_subsets: int, subset_size: int):
  def one(k):
    kr, kf = jax.random.split(k)
    x = real[jax.random.choice(kr, real.shape[0], (subset_size,), replace=False)]
    y = fake[jax.random.choice(kf, fake.shape[0], (subset_size,), replace=False)]
    m = subset_size
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    # Unbiased MMD^2: diagonal terms excluded from the within-set means.
    return ((kxx.sum() - jnp.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - jnp.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean())
  return jax.lax.map(one, jax.random.split(key, num_subsets))


def kid(real, fake, key, num_subsets: int = 100, subset_size: int = 1000):
  """(mean, std) of the unbiased MMD^2 estimate over random subsets, in float64."""
  subset_size = min(subset_size, len(real), len(fake))
  with jax.enable_x64(True):
    values = np.asarray(_kid_subsets(jnp.asarray(real, jnp.float64), jnp.asarray(fake, jnp.float64),
                                     key, num_subsets, subset_size))
  return float(values.mean()), float(values.std())


def _squared_distances(a, b):
  return jnp.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


@functools.partial(jax.jit, static_argnames=("k", "block"))
def knn_radii(features, k: int = 3, block: int = 1000):
  """Squared distance from each point to its k-th nearest other point in the same set."""
  n = features.shape[0]
  pad = -n % block
  padded = jnp.pad(features, ((0, pad), (0, 0)))
  def radii(rows):
    d = _squared_distances(rows, features)
    return -jax.lax.top_k(-d, k + 1)[0][:, k]  # Index 0 is the point itself (distance 0).
  return jax.lax.map(radii, padded.reshape(-1, block, features.shape[1])).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("block",))
def _coverage(queries, support, support_radii, block: int = 1000):
  """Fraction of queries inside at least one support point's k-NN ball."""
  n = queries.shape[0]
  pad = -n % block
  padded = jnp.pad(queries, ((0, pad), (0, 0)))
  def inside(rows):
    return (_squared_distances(rows, support) <= support_radii[None, :]).any(1)
  hits = jax.lax.map(inside, padded.reshape(-1, block, queries.shape[1])).reshape(-1)[:n]
  return hits.mean()


def precision_recall(real, fake, k: int = 3):
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds."""
  real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
  precision = _coverage(fake, real, knn_radii(real, k))
  recall = _coverage(real, fake, knn_radii(fake, k))
  return float(precision), float(recall)


@jax.jit
def _classifier_score(probs):
  marginal = probs.mean(0, keepdims=True)
  kl = (probs * (jnp.log(probs + 1e-12) - jnp.log(marginal + 1e-12))).sum(1)
  return jnp.exp(kl.mean())


def classifier_score(probs) -> float:
  """exp(E_x KL(p(y|x) || p(y))): the Inception-score analogue; at most the number of classes."""
  return float(_classifier_score(jnp.asarray(probs)))
