
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistgen_jax.metrics import sample_metrics


def reference_mmd2(x, y):
  """Unbiased MMD^2 with the cubic polynomial kernel, float64 numpy."""
  d = x.shape[1]
  k = lambda a, b: (a @ b.T / d + 1.0) ** 3
  m, n = len(x), len(y)
  kxx, kyy = k(x, x), k(y, y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2 * k(x, y).mean())


def test_kid_with_whole_sets_equals_reference():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(200, 16)), rng.normal(0.5, 1.0, size=(200, 16))
  # A subset of the whole set is a permutation of it: MMD^2 is permutation invariant.
  mean, std = sample_metrics.kid(x, y, jax.random.PRNGKey(0), num_subsets=3, subset_size=200)
  np.testing.assert_allclose(mean, reference_mmd2(x, y), rtol=1e-9)
  assert std < 1e-9 * abs(mean)


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(3000, 16)), rng.normal(size=(3000, 16))
  same, _ = sample_metrics.kid(x, y, jax.random.PRNGKey(1), num_subsets=20, subset_size=500)
  shifted, _ = sample_metrics.kid(x, y + 1.0, jax.random.PRNGKey(1), num_subsets=20,
                                  subset_size=500)
  assert abs(same) < 0.01 < shifted


def reference_precision_recall(real, fake, k):
  def radii(a):
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    return np.sort(d, axis=1)[:, k]
  def inside(q, s):
    return ((q[:, None] - s[None]) ** 2).sum(-1) <= radii(s)[None]
  fake_in_real = inside(fake, real)
  return {"precision": fake_in_real.any(1).mean(), "recall": inside(real, fake).any(1).mean(),
          "density": fake_in_real.sum(1).mean() / k, "coverage": fake_in_real.any(0).mean()}


def test_precision_recall_against_brute_force():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(300, 5)).astype(np.float32)
  fake = (rng.normal(size=(250, 5)) * 0.5 + 0.8).astype(np.float32)
  ours = sample_metrics.precision_recall(real, fake, k=3)
  ref = reference_precision_recall(real.astype(np.float64), fake.astype(np.float64), 3)
  for name in ref:  # One point may flip on a float32 boundary.
    np.testing.assert_allclose(ours[name], ref[name], atol=1 / 250 * (1 + 3 * (name == "density")))
    assert 0.05 < ours[name] < 0.999 or name == "density", name


def test_precision_recall_extremes():
  rng = np.random.default_rng(3)
  real = rng.normal(size=(400, 4)).astype(np.float32)
  same = sample_metrics.precision_recall(real, real)
  assert same["precision"] == same["recall"] == same["coverage"] == 1.0
  assert same["density"] > 1.0  # Each point is in its own ball and its k neighbours'.
  far = sample_metrics.precision_recall(real, real + 100.0)
  assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
  # Mode collapse: every fake is one real point -> perfect precision, tiny recall and coverage.
  collapsed = sample_metrics.precision_recall(real, np.repeat(real[:1], 400, 0))
  assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05
  assert collapsed["coverage"] < 0.05


def test_knn_radii_is_kth_neighbour_excluding_self():
  points = jnp.asarray([[0.0], [1.0], [3.0], [7.0], [15.0]])
  np.testing.assert_allclose(sample_metrics.knn_radii(points, k=1, block=2),
                             [1.0, 1.0, 4.0, 16.0, 64.0])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_radii_counts_ties_as_a_sort_does(k):
  # Repeated points (a collapsed generator draws the same image many times) and repeated
  # distances: the radius is the entry a sort of the row puts at index k (the point itself first).
  rng = np.random.default_rng(4)
  points = np.concatenate([np.repeat(rng.integers(0, 4, (1, 3)), 6, 0),
                           rng.integers(0, 4, (31, 3))]).astype(np.float32)
  d = ((points[:, None] - points[None]) ** 2).sum(-1)
  expected = np.sort(d, axis=1)[:, k]
  assert (expected[:6] == 0).all()  # The six repeats are each other's nearest neighbours.
  for block in (8, 37, 250):  # Padded blocks, one exact block, one larger than the set.
    np.testing.assert_array_equal(sample_metrics.knn_radii(jnp.asarray(points), k, block),
                                  expected)


def test_precision_recall_does_not_depend_on_the_block():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(300, 5)).astype(np.float32)
  fake = (rng.normal(size=(250, 5)) * 0.5 + 0.8).astype(np.float32)
  whole = sample_metrics.precision_recall(real, fake, k=3, block=250)
  assert sample_metrics.precision_recall(real, fake, k=3, block=16) == whole
  assert sample_metrics.precision_recall(real, fake, k=3, block=1000) == whole


def test_classifier_score_bounds():
  one_hot = jnp.eye(10)[jnp.arange(1000) % 10]
  np.testing.assert_allclose(sample_metrics.classifier_score(one_hot), 10.0, rtol=1e-6)
  np.testing.assert_allclose(sample_metrics.classifier_score(jnp.full((50, 10), 0.1)), 1.0,
                             rtol=1e-6)
  collapsed = jnp.eye(10)[jnp.zeros(100, jnp.int32)]
  np.testing.assert_allclose(sample_metrics.classifier_score(collapsed), 1.0, rtol=1e-6)


def test_digit_histogram_and_its_entropy():
  hist, entropy = sample_metrics.digit_histogram(np.arange(1000) % 10, 10)
  np.testing.assert_allclose(hist, 0.1)
  assert abs(entropy - np.log(10)) < 1e-12
  hist, entropy = sample_metrics.digit_histogram(np.array([3, 3, 3, 7]), 10)
  np.testing.assert_allclose(hist, [0, 0, 0, 0.75, 0, 0, 0, 0.25, 0, 0])
  assert abs(entropy - -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))) < 1e-12
  assert sample_metrics.digit_histogram(np.full(5, 2), 10)[1] == 0.0  # one mode: 0, not -0
