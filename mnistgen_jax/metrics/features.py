"""The committed LeNet weights (verified by sha256) and batched feature extraction with progress."""
from __future__ import annotations

import functools
import hashlib
import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import cpu_compiler
from mnistgen_jax.errors import UserError
from mnistgen_jax.models.lenet import LeNet
from mnistgen_jax.progress import progress as show_progress

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
MANIFEST = os.path.join(WEIGHTS_DIR, "manifest.json")


class FeatureNetworkError(UserError):
  pass


def read_manifest(weights_dir: str = WEIGHTS_DIR) -> dict:
  path = os.path.join(weights_dir, "manifest.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def load_classifier(dataset: str, weights_dir: str = WEIGHTS_DIR):
  """(LeNet module, variables) for `dataset`; refuses weights whose sha256 is not the pinned one."""
  entry = read_manifest(weights_dir).get(dataset)
  fix = f"run `mnistgen-train-classifier --dataset={dataset}`"
  if entry is None:
    raise FeatureNetworkError(f"no evaluation classifier for {dataset!r} in {weights_dir}; {fix}")
  path = os.path.join(weights_dir, entry["file"])
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise FeatureNetworkError(f"{path} is unreadable ({e}); {fix}") from e
  digest = hashlib.sha256(raw).hexdigest()
  if digest != entry["sha256"]:
    raise FeatureNetworkError(f"{path} has sha256 {digest[:12]}..., the manifest pins "
                              f"{entry['sha256'][:12]}...; restore the file with git or {fix}")
  params = flax.serialization.msgpack_restore(raw)
  return LeNet(num_classes=params["head"]["bias"].shape[0]), {"params": params}


def make_extractor(model, chunk: int = 100):
  """Jitted (variables, uint8 images) -> (features (N,128), class probabilities (N,10)), `chunk`
  images per call. On CPU the network compiles without YNNPACK fusions (cpu_compiler: XLA's own
  multi-threaded kernels), in chunks of 100: both measured faster than XLA's defaults and larger
  chunks (XLA:CPU's convolutions run out of cache on larger batches). The features differ from
  the default compilation by float rounding (~1e-5; fid_lenet ~1e-6 relative)."""

  @functools.partial(jax.jit, compiler_options=cpu_compiler.compiler_options(ynn_fusions=False))
  def extract(variables, images):
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    return model.apply(variables, x, method="features_and_probs")

  def run(variables, images, desc: str = "features", progress: bool = True):
    feats, probs = [], []
    starts = range(0, len(images), chunk)
    for start in show_progress(starts, desc=desc, unit="chunk", disable=not progress):
      batch = images[start:start + chunk]
      if len(batch) < chunk:  # Pad so every call has one shape (one compilation).
        pad = np.zeros((chunk - len(batch),) + batch.shape[1:], batch.dtype)
        f, p = extract(variables, np.concatenate([np.asarray(batch), pad]))
        f, p = f[:len(batch)], p[:len(batch)]
      else:
        f, p = extract(variables, batch)
      feats.append(f)
      probs.append(p)
    return jnp.concatenate(feats), jnp.concatenate(probs)

  run.extract = extract  # The jitted network, for tests that inspect its compiled form.
  return run
