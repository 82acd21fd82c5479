"""Streaming feature statistics and the Frechet distance, jitted, in float64.

Statistics are shifted sums: count, sum(x - c) and sum((x - c)(x - c)^T) for a fixed shift c (the
first batch's mean). Sums make them exact whatever the batch size and mergeable across batches,
hosts and devices (add them, or psum them); the shift keeps the covariance free of cancellation.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class FeatureStats:
  count: jnp.ndarray   # scalar
  shift: jnp.ndarray   # (d,)
  total: jnp.ndarray   # (d,)   sum of (x - shift)
  outer: jnp.ndarray   # (d, d) sum of (x - shift)(x - shift)^T

  @property
  def mean(self) -> np.ndarray:
    with jax.enable_x64(True):
      return np.asarray(self.shift + self.total / self.count)

  @property
  def cov(self) -> np.ndarray:
    """Unbiased sample covariance (divides by count - 1, as np.cov), float64."""
    with jax.enable_x64(True):
      return np.asarray(
          (self.outer - jnp.outer(self.total, self.total) / self.count) / (self.count - 1))


def empty_stats(shift) -> FeatureStats:
  with jax.enable_x64(True):
    shift = jnp.asarray(shift, jnp.float64)
    d = shift.shape[0]
    return FeatureStats(jnp.zeros((), jnp.float64), shift, jnp.zeros(d, jnp.float64),
                        jnp.zeros((d, d), jnp.float64))


@jax.jit
def _update(stats: FeatureStats, features) -> FeatureStats:
  centred = features.astype(jnp.float64) - stats.shift
  return stats.replace(count=stats.count + features.shape[0],
                       total=stats.total + centred.sum(0),
                       outer=stats.outer + centred.T @ centred)


def update_stats(stats: FeatureStats | None, features) -> FeatureStats:
  """Adds a batch of features (N, d); stats=None starts new statistics shifted by its mean."""
  with jax.enable_x64(True):
    features = jnp.asarray(features)
    if stats is None:
      stats = empty_stats(features.astype(jnp.float64).mean(0))
    return _update(stats, features)


def merge_stats(a: FeatureStats, b: FeatureStats) -> FeatureStats:
  """Statistics of the union of two sets (b is re-shifted onto a's shift exactly)."""
  with jax.enable_x64(True):
    delta = b.shift - a.shift
    total_b = b.total + b.count * delta  # sum(x - a.shift) = sum(x - b.shift) + n * delta
    outer_b = (b.outer + jnp.outer(b.total, delta) + jnp.outer(delta, b.total)
               + b.count * jnp.outer(delta, delta))
    return a.replace(count=a.count + b.count, total=a.total + total_b, outer=a.outer + outer_b)


def stats_of(features, batch_size: int = 1000) -> FeatureStats:
  stats = None
  for start in range(0, len(features), batch_size):
    stats = update_stats(stats, features[start:start + batch_size])
  return stats


def _sqrtm_psd(matrix):
  """Square root of a symmetric PSD matrix by eigh; negative round-off eigenvalues clamp to 0."""
  w, v = jnp.linalg.eigh(matrix)
  return (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T


@jax.jit
def _frechet(mu1, cov1, mu2, cov2):
  root1 = _sqrtm_psd(cov1)
  inner = root1 @ cov2 @ root1
  eigenvalues = jnp.linalg.eigvalsh((inner + inner.T) / 2)
  trace_sqrt = jnp.sqrt(jnp.clip(eigenvalues, 0.0)).sum()
  return jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1) + jnp.trace(cov2) - 2.0 * trace_sqrt


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64; never NaN."""
  with jax.enable_x64(True):
    args = [jnp.asarray(np.asarray(a, np.float64)) for a in (mu1, cov1, mu2, cov2)]
    return float(_frechet(*args))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
  return frechet_distance(a.mean, a.cov, b.mean, b.cov)
