import numpy as np
import pytest
from scipy import linalg

from mnistgen_jax.metrics import fid


def reference_fid(x1, x2):
  """pytorch-fid's calculate_frechet_distance, float64, scipy.linalg.sqrtm of S1 S2."""
  mu1, mu2 = x1.mean(0), x2.mean(0)
  s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
  covmean = linalg.sqrtm(s1.dot(s2))
  if not np.isfinite(covmean).all():
    offset = np.eye(s1.shape[0]) * 1e-6
    covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
  covmean = covmean.real
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _features(rng, n, d, shift=0.0, scale=1.0):
  mixing = rng.normal(size=(d, d)) / np.sqrt(d)
  return (rng.normal(size=(n, d)) @ mixing * scale + shift).astype(np.float32)


@pytest.mark.parametrize("n,d", [(2000, 8), (1000, 64), (3000, 128), (500, 128), (100, 128)])
def test_fid_matches_scipy_reference(n, d):
  rng = np.random.default_rng(n + d)
  x1 = _features(rng, n, d)
  x2 = _features(rng, n + 37, d, shift=0.3, scale=1.2)
  ours = fid.fid_from_stats(fid.stats_of(x1, 256), fid.stats_of(x2, 300))
  ref = reference_fid(x1.astype(np.float64), x2.astype(np.float64))
  assert np.isfinite(ours)
  assert abs(ours - ref) <= 1e-4 * max(1.0, abs(ref)), (ours, ref)


def test_same_distribution_small_fid_and_identical_stats_zero():
  rng = np.random.default_rng(0)
  x = _features(rng, 5000, 32)
  stats = fid.stats_of(x)
  assert abs(fid.fid_from_stats(stats, stats)) < 1e-8
  half = fid.fid_from_stats(stats, fid.stats_of(x[:2500]))  # A subset of the same sample.
  assert 0 < half < 0.5


def test_equal_covariances_give_squared_mean_difference():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(16, 16))
  cov = a @ a.T
  mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
  np.testing.assert_allclose(fid.frechet_distance(mu1, cov, mu2, cov), ((mu1 - mu2) ** 2).sum(),
                             rtol=1e-9, atol=1e-9)


def test_diagonal_covariances_closed_form():
  rng = np.random.default_rng(2)
  a, b = rng.uniform(0, 3, size=20), rng.uniform(0, 3, size=20)
  a[:3] = 0.0  # Singular covariances are fine.
  mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
  expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
  np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected,
                             rtol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 7, 100, 1000, 5000])
def test_streaming_stats_equal_np_cov_whatever_the_batch(batch_size):
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(1000, 24)) * 3 + 50).astype(np.float32)  # Large mean: no cancellation.
  stats = fid.stats_of(x, batch_size)
  np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False),
                             rtol=1e-9, atol=1e-9)
  assert float(stats.count) == 1000


def test_merged_stats_equal_stats_of_the_union():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(300, 10)), rng.normal(2.0, 1.0, size=(500, 10))
  merged = fid.merge_stats(fid.stats_of(x), fid.stats_of(y))
  union = np.concatenate([x, y])
  np.testing.assert_allclose(merged.mean, union.mean(0), rtol=1e-10)
  np.testing.assert_allclose(merged.cov, np.cov(union, rowvar=False), rtol=1e-9, atol=1e-12)


def test_no_nan_for_degenerate_inputs():
  zeros = np.zeros((50, 16), np.float32)
  ones = np.ones((50, 16), np.float32)
  value = fid.fid_from_stats(fid.stats_of(zeros), fid.stats_of(ones))
  assert np.isfinite(value) and abs(value - 16.0) < 1e-9
