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
    # Remove the k smallest (the point itself first, at distance 0), then take the minimum:
    # k passes of argmin ran 15x faster than lax.top_k on XLA:CPU.
    index = jnp.arange(d.shape[0])
    d = jax.lax.fori_loop(0, k, lambda _, d: d.at[index, jnp.argmin(d, axis=1)].set(jnp.inf), d)
    return d.min(axis=1)
  return jax.lax.map(radii, padded.reshape(-1, block, features.shape[1])).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("block",))
def _ball_membership(queries, support, support_radii, block: int = 1000):
  """For queries against the support points' k-NN balls: per query, whether it is inside any ball
  and inside how many; per support point, whether its ball holds any query."""
  n = queries.shape[0]
  pad = -n % block
  padded = jnp.pad(queries, ((0, pad), (0, 0)))
  valid = (jnp.arange(n + pad) < n).reshape(-1, block)

  def scan_block(ball_used, inputs):
    rows, keep = inputs
    inside = (_squared_distances(rows, support) <= support_radii[None, :]) & keep[:, None]
    return ball_used | inside.any(0), inside.sum(1)

  ball_used, counts = jax.lax.scan(scan_block, jnp.zeros(support.shape[0], bool),
                                   (padded.reshape(-1, block, queries.shape[1]), valid))
  counts = counts.reshape(-1)[:n]
  return (counts > 0).mean(), counts.mean(), ball_used.mean()


def precision_recall(real, fake, k: int = 3, real_radii=None):
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds, and density
  and coverage (Naeem et al. 2020), which outlying real points with large balls fool less.
  real_radii: knn_radii(real, k), when the caller already has them. Returns a dict."""
  real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
  real_radii = knn_radii(real, k) if real_radii is None else real_radii
  precision, real_balls_per_fake, coverage = _ball_membership(fake, real, real_radii)
  recall = _ball_membership(real, fake, knn_radii(fake, k))[0]
  return {"precision": float(precision), "recall": float(recall),
          "density": float(real_balls_per_fake) / k, "coverage": float(coverage)}


@jax.jit
def _classifier_score(probs):
  marginal = probs.mean(0, keepdims=True)
  kl = (probs * (jnp.log(probs + 1e-12) - jnp.log(marginal + 1e-12))).sum(1)
  return jnp.exp(kl.mean())


def classifier_score(probs) -> float:
  """exp(E_x KL(p(y|x) || p(y))): the Inception-score analogue; at most the number of classes."""
  return float(_classifier_score(jnp.asarray(probs)))


def digit_histogram(predicted, num_classes: int) -> tuple[np.ndarray, float]:
  """The share of samples read as each class, and that histogram's entropy in nats (ln 10 = 2.30
  when every digit is equally frequent; lower: some digits missing, a mode-collapse signal)."""
  hist = np.bincount(np.asarray(predicted), minlength=num_classes) / len(predicted)
  entropy = float(-(hist[hist > 0] * np.log(hist[hist > 0])).sum()) + 0.0  # never -0.0
  return hist, entropy
