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


def _next_smallest(d, floor):
  """Per row of d: the smallest entry above floor, and how many entries equal it (one pass)."""
  above = jnp.where(d > floor[:, None], d, jnp.inf)

  def keep_smaller(a, b):
    (a_value, a_count), (b_value, b_count) = a, b
    count = jnp.where(a_value < b_value, a_count,
                      jnp.where(b_value < a_value, b_count, a_count + b_count))
    return jnp.minimum(a_value, b_value), count

  return jax.lax.reduce((above, jnp.ones(d.shape, jnp.int32)), (jnp.inf, 0), keep_smaller, (1,))


def _order_statistic(d, rank: int):
  """Per row of d: the rank-th smallest entry (1-based), ties counted: the entry a sort would put
  at index rank - 1."""
  floor = jnp.full(d.shape[:1], -jnp.inf, d.dtype)
  seen = jnp.zeros(d.shape[:1], jnp.int32)
  found = jnp.full(d.shape[:1], jnp.inf, d.dtype)
  for _ in range(rank):  # Each pass moves past at least one entry.
    floor, count = _next_smallest(d, floor)
    found = jnp.where((seen < rank) & (seen + count >= rank), floor, found)
    seen = seen + count
  return found


@functools.partial(jax.jit, static_argnames=("k", "block"))
def knn_radii(features, k: int = 3, block: int = 250):
  """Squared distance from each point to its k-th nearest other point in the same set: the
  (k+1)-th smallest distance of its row, the point itself (0) being the first.

  Why passes of (min above the last one, its count): they only read the distance block, where k
  passes of argmin would each write inf over the found entry (slower, the same radii, ties
  included)."""
  n = features.shape[0]
  pad = -n % block
  padded = jnp.pad(features, ((0, pad), (0, 0)))
  def radii(rows):
    return _order_statistic(_squared_distances(rows, features), k + 1)
  return jax.lax.map(radii, padded.reshape(-1, block, features.shape[1])).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("block",))
def _manifold_overlap(real, fake, real_radii, fake_radii, block: int = 250):
  """One pass over the fake x real distances, a block of fake rows at a time: whether each fake
  point lies inside any real point's k-NN ball (precision) and inside how many (density), whether
  each real ball holds a fake point (coverage), whether each real point lies inside any fake ball
  (recall). Returns (precision, real balls per fake point, coverage, recall)."""
  n = fake.shape[0]
  pad = -n % block
  rows = jnp.pad(fake, ((0, pad), (0, 0))).reshape(-1, block, fake.shape[1])
  radii = jnp.pad(fake_radii, (0, pad)).reshape(-1, block)
  valid = (jnp.arange(n + pad) < n).reshape(-1, block)

  def scan_block(carry, inputs):
    real_ball_used, real_in_fake_ball = carry
    fake_rows, fake_row_radii, keep = inputs
    d = _squared_distances(fake_rows, real)
    in_real_ball = (d <= real_radii[None, :]) & keep[:, None]
    in_fake_ball = (d <= fake_row_radii[:, None]) & keep[:, None]
    return ((real_ball_used | in_real_ball.any(0), real_in_fake_ball | in_fake_ball.any(0)),
            in_real_ball.sum(1))

  no_real = jnp.zeros(real.shape[0], bool)
  (real_ball_used, real_in_fake_ball), counts = jax.lax.scan(
      scan_block, (no_real, no_real), (rows, radii, valid))
  counts = counts.reshape(-1)[:n]
  return (counts > 0).mean(), counts.mean(), real_ball_used.mean(), real_in_fake_ball.mean()


def precision_recall(real, fake, k: int = 3, real_radii=None, block: int = 250):
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds, and density
  and coverage (Naeem et al. 2020), which outlying real points with large balls fool less.
  real_radii: knn_radii(real, k), when the caller already has them. block: fake points per
  distance block. Returns a dict.

  Why one pass: the fake x real distances serve all four (recall reads them transposed), so the
  10,000 x 10,000 evaluation computes two distance matrices (fake radii, overlap), not three."""
  real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
  real_radii = knn_radii(real, k, block) if real_radii is None else real_radii
  precision, real_balls_per_fake, coverage, recall = _manifold_overlap(
      real, fake, real_radii, knn_radii(fake, k, block), block)
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
