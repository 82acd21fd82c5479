"""The evaluation of any family's run, composed from metrics/ (maths only) on the committed LeNet's
features (fid_lenet etc.); runs are read through runs.py.

`evaluate_run(workdir)` restores the run and applies every evaluator that fits the model:
reconstruction FID, sample metrics (FID, KID, precision/recall, classifier score, digit accuracy
of conditional samples) and the IWAE bound. `calibration(dataset)` gives the reference rows
computed the same way: real train vs real test (the floor), degraded test images, pure noise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import zipfile
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import scipy
from scipy import ndimage

from mnistgen_jax import cpu_compiler, data, files, report, runs, viz
from mnistgen_jax import train as train_lib
from mnistgen_jax.metrics import features as features_lib
from mnistgen_jax.metrics import fid, likelihood, sample_metrics
from mnistgen_jax.models.interface import supports
from mnistgen_jax.progress import progress as show_progress


PR_NEIGHBOURS = 3  # k of the k-NN manifolds of precision and recall
# The least samples the sample metrics take: KID's unbiased estimate needs two a subset, the
# k-NN radii of precision/recall more than k; below a few more, every figure is noise.
MIN_SAMPLES = 10
PICTURE_SAMPLES, PICTURE_RECONSTRUCTIONS = 100, 10  # in the TensorBoard images
STATS_FIELDS = ("count", "shift", "total", "outer")  # fid.FeatureStats, as kept in the cache


@dataclasses.dataclass
class Reference:
  """The test set's classifier features and statistics: what every FID here is measured against."""
  dataset: str
  extract: Callable
  classifier_variables: Any
  test_images: np.ndarray
  test_labels: np.ndarray
  test_features: Any = None
  test_stats: Any = None
  test_radii: Any = None  # k-NN radii of the test features, for precision
  progress: bool = True

  @classmethod
  def load(cls, dataset: str, progress: bool = True, cache_dir: str | None = None, **data_kw):
    """The test set's features, statistics and k-NN radii: read from the cache directory where
    an earlier evaluation on this machine left them (the same values; see
    reference_cache_path), else computed (about 5 s on 2 CPU cores) and kept there."""
    model, variables = features_lib.load_classifier(dataset)
    images, labels = data.load(dataset, "test", **data_kw)
    ref = cls(dataset, features_lib.make_extractor(model), variables, images, labels,
              progress=progress)
    path = reference_cache_path(ref, cache_dir)
    try:
      with np.load(path) as kept, jax.enable_x64(True):  # The statistics are float64.
        arrays = {k: kept[k] for k in kept.files if k != "digest"}
        if str(kept["digest"]) != _arrays_digest(arrays):
          raise ValueError("edited")
        ref.test_stats = fid.FeatureStats(*(jnp.asarray(arrays[f"stats_{name}"])
                                            for name in STATS_FIELDS))
        ref.test_features = jnp.asarray(arrays["features"])
        ref.test_radii = jnp.asarray(arrays["radii"])
      return ref
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass  # Absent, unreadable, cut or edited: compute below.
    ref.test_features, _ = ref.features(images, "test features")
    ref.test_stats = fid.stats_of(np.asarray(ref.test_features))
    ref.test_radii = sample_metrics.knn_radii(ref.test_features, PR_NEIGHBOURS)
    kept = {"features": ref.test_features, "radii": ref.test_radii,
            **{f"stats_{name}": getattr(ref.test_stats, name) for name in STATS_FIELDS}}
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      arrays = {k: np.asarray(v) for k, v in kept.items()}
      files.write_atomically(path, lambda tmp: np.savez(
          tmp, digest=_arrays_digest(arrays), **arrays))
    except OSError:
      pass  # A read-only or full cache costs the next evaluation 5 s, nothing else.
    return ref

  def features(self, images, desc: str):
    return self.extract(self.classifier_variables, images, desc=desc, progress=self.progress)

  def fid(self, images, desc: str) -> float:
    feats, _ = self.features(images, desc)
    return fid.fid_from_stats(fid.stats_of(np.asarray(feats)), self.test_stats)


def sample_quality(ref: Reference, images, key, labels=None) -> dict:
  """fid_lenet, kid_lenet, precision/recall (k=3) and the classifier score of a set of images."""
  feats, probs = ref.features(images, "sample features")
  kid_mean, kid_std = sample_metrics.kid(np.asarray(ref.test_features), np.asarray(feats), key)
  out = {"fid_lenet": fid.fid_from_stats(fid.stats_of(np.asarray(feats)), ref.test_stats),
         "kid_lenet": kid_mean, "kid_lenet_std": kid_std,
         **sample_metrics.precision_recall(ref.test_features, feats, PR_NEIGHBOURS, ref.test_radii),
         "classifier_score": sample_metrics.classifier_score(probs),
         "digit_entropy": sample_metrics.digit_histogram(np.asarray(probs).argmax(1),
                                                         probs.shape[1])[1]}
  if labels is not None:  # Conditional samples: does the classifier read the requested digit?
    read = np.asarray(probs).argmax(1) == np.asarray(labels)
    out["label_accuracy"] = float(read.mean())
    out["label_accuracy_per_digit"] = [float(read[np.asarray(labels) == d].mean())
                                       if np.any(np.asarray(labels) == d) else None
                                       for d in range(probs.shape[1])]
  return out


def calibration(ref: Reference, key, num: int = 10000, **data_kw) -> dict:
  """Reference rows: train vs test (floor), blurred / noisy test images, Gaussian noise (ceiling)."""
  test = ref.test_images[:num].astype(np.float32) / 255.0
  k_noise, k_pure, k_kid = jax.random.split(key, 3)
  noise = np.asarray(jax.random.normal(k_noise, test.shape))
  pure = np.asarray(jax.random.normal(k_pure, test.shape)) * 0.5 + 0.5
  train = data.load(ref.dataset, "train", limit=num, **data_kw)[0]
  rows = {
      "real train vs test": train,
      "test, Gaussian blur sigma=1px": viz.to_uint8(ndimage.gaussian_filter(test, (0, 1, 1, 0))),
      "test + N(0, 0.1^2) pixel noise": viz.to_uint8(test + 0.1 * noise),
      "test + N(0, 0.3^2) pixel noise": viz.to_uint8(test + 0.3 * noise),
      "pure noise, clip(N(0.5, 0.5^2))": viz.to_uint8(pure),
  }
  return {name: sample_quality(ref, images, k_kid) for name, images in rows.items()}


def _arrays_digest(arrays: dict) -> str:
  """sha256 of named arrays (names, dtypes, shapes and bytes): what a cache file is checked by."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _rows_digest(rows) -> str:
  return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _cache_digest(ref: Reference, *parts: str) -> str:
  """16 hex digits of sha256 over parts and what every cached evaluation result depends on: the
  dataset, the classifier's weights, the metric code (these modules' source), the versions of
  jax, numpy and scipy, and the backend. A change to any of them is another file, never a stale
  result."""
  parts = [*parts, ref.dataset,
           hashlib.sha256(flax.serialization.to_bytes(ref.classifier_variables)).hexdigest(),
           jax.__version__, jax.default_backend(), np.__version__, scipy.__version__]
  for source in (fid.__file__, sample_metrics.__file__, features_lib.__file__, viz.__file__,
                 __file__):
    with open(source, "rb") as f:
      parts.append(hashlib.sha256(f.read()).hexdigest())
  return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def calibration_cache_path(ref: Reference, key, num: int, cache_dir: str | None = None) -> str:
  """Where calibration(ref, key, num) is kept. The rows depend on no run, only on num, the key and
  _cache_digest's list (the dataset's splits are verified against pinned sha256s)."""
  typed_key = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  digest = _cache_digest(ref, str(num),
                         np.asarray(jax.random.key_data(key) if typed_key else key).tobytes().hex())
  return os.path.join(cache_dir or files.cache_dir(), "calibration",
                      f"{ref.dataset}-n{num}-{digest}.json")


def reference_cache_path(ref: Reference, cache_dir: str | None = None) -> str:
  """Where Reference.load keeps the test set's features, statistics and radii: they depend on the
  test images (their sha256) and _cache_digest's list."""
  digest = _cache_digest(ref, hashlib.sha256(np.ascontiguousarray(ref.test_images)).hexdigest())
  return os.path.join(cache_dir or files.cache_dir(), "reference", f"{ref.dataset}-{digest}.npz")


def cached_calibration(ref: Reference, key, num: int = 10000, cache_dir: str | None = None,
                       recompute: bool = False, **data_kw) -> tuple[dict, str]:
  """(calibration rows, where they came from: 'cache <path>' or 'computed'). The rows are the same
  for every run of a dataset (about 30 s on 2 CPU cores), so they are computed once and kept in
  the cache directory with their digest; recompute=True computes them anew (and rewrites the
  file). A cache that cannot be read or written, or fails its digest, is passed over: the rows are
  computed as without one (and the file rewritten)."""
  path = calibration_cache_path(ref, key, num, cache_dir)
  if not recompute:
    try:
      with open(path) as f:
        kept = json.load(f)
      if kept["digest"] == _rows_digest(kept["rows"]):
        return kept["rows"], f"cache {path}"
    except (OSError, ValueError, KeyError, TypeError):
      pass  # Absent, unreadable, cut or edited (its digest fails): compute below.
  rows = calibration(ref, key, num, **data_kw)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    runs.write_json(path, {"rows": rows, "digest": _rows_digest(files.strict_json(rows))})
  except OSError:
    pass  # A read-only or full cache costs the next evaluation 30 s, nothing else.
  return rows, "computed"


def generate_batches(model, variables, labels, key, batch_size: int = 1000, progress: bool = True,
                     sampler=None):
  """(start, uint8 samples) for len(labels) samples, batch_size at a time (one compilation: the
  last batch is padded), with a progress bar; memory stays one batch whatever len(labels) is.
  sampler: report.make_sampler(model) already compiled for this batch size (timing without it)."""
  sample = sampler or report.make_sampler(model)
  for i, start in enumerate(show_progress(range(0, len(labels), batch_size), desc="sampling",
                                          disable=not progress)):
    y = labels[start:start + batch_size]
    y_full = np.pad(y, (0, batch_size - len(y)))  # Pad the last batch to the same shape.
    images = sample(variables, jnp.asarray(y_full), jax.random.fold_in(key, i))
    yield start, viz.to_uint8(images)[:len(y)]


def generate(model, variables, labels, key, batch_size: int = 1000, progress: bool = True,
             sampler=None):
  """len(labels) samples as uint8: generate_batches' batches in one array."""
  return np.concatenate([images for _, images in generate_batches(
      model, variables, labels, key, batch_size, progress, sampler)])


def reconstruct(model, variables, images, labels, batch_size: int, progress: bool = True,
                compiler_options: dict | None = None):
  """uint8 reconstructions of uint8 images, a jitted batch at a time with a progress bar (a
  pixel-by-pixel decoder such as pixel_vae's takes minutes for them on a CPU)."""
  apply = jax.jit(lambda v, x, y: model.apply(v, train_lib.to_float(x), y, method="reconstruct"),
                  compiler_options=compiler_options)
  out = []
  for start in show_progress(range(0, len(images), batch_size), desc="reconstructions",
                             disable=not progress):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(x)  # The last batch padded to the same shape: one compilation.
    x_full = np.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    images_out = apply(variables, jnp.asarray(x_full), jnp.asarray(np.pad(y, (0, pad))))
    out.append(viz.to_uint8(images_out)[:len(x)])
  return np.concatenate(out)


def score_samples(ref: Reference, config, model, variables, num_samples: int,
                  progress: bool = True, batch_size: int = 1000, sampler=None):
  """(sample_quality of num_samples samples, seconds the sampling took, the uint8 samples). Labels
  cycle through the classes (ignored if unconditional); the keys are evaluate_variables', so
  mnistgen-evaluate and mnistgen-sampling-curve give the same numbers for the same settings."""
  key = jax.random.fold_in(train_lib.root_keys(config.train.seed)["eval"], 1)
  num_classes = data.info(config.data.dataset).num_classes
  labels = np.arange(num_samples, dtype=np.int32) % num_classes
  start = time.perf_counter()
  images = generate(model, variables, labels, jax.random.fold_in(key, 2), batch_size, progress,
                    sampler or report.make_sampler(model, cpu_compiler.of_config(config)))
  seconds = time.perf_counter() - start
  return sample_quality(ref, images, jax.random.fold_in(key, 3),
                        labels if model.conditional else None), seconds, images


def check_num_samples(num_samples: int, flag: str = "num_samples") -> None:
  """ValueError (one line, naming --flag) for fewer samples than the sample metrics take."""
  if num_samples < MIN_SAMPLES:
    raise ValueError(f"--{flag}={num_samples}: the sample metrics (fid_lenet, KID, precision and "
                     f"recall) need at least {MIN_SAMPLES} samples; pass more")


def evaluate_variables(config, model, variables, num_samples: int = 10000,
                       iwae_samples: int = 50, progress: bool = True,
                       ref: Reference | None = None, iwae_images: int = 0,
                       iwae_decodes_per_pass: int | None = None,
                       reconstruction_images: int = 0, pictures: dict | None = None) -> dict:
  """Every evaluation that fits the model, on trained variables in memory (their sampling prior,
  if any, already fitted by training); returns a dict for eval.json's 'evaluation' block, with
  the wall seconds of each part under 'seconds'. pictures: a dict to receive grids (uint8) of
  the first samples and reconstructions evaluated, for TensorBoard. iwae_images > 0: the IWAE bound of the first
  iwae_images test images only (recorded as iwae_images). iwae_decodes_per_pass: see
  likelihood.iwae_nll_per_image (speed only). reconstruction_images > 0: the reconstruction FID
  of the first that many test images only (recorded; for decoders that draw pixel by pixel)."""
  data_kw = dict(source=config.run.data_source, data_dir=config.run.data_dir or None)
  seconds, clock = {}, time.perf_counter()

  def took(part):
    nonlocal clock
    now = time.perf_counter()
    seconds[part] = round(now - clock, 2)
    clock = now

  if ref is None:
    ref = Reference.load(config.data.dataset, progress=progress, **data_kw)
    took("reference")
  key = jax.random.fold_in(train_lib.root_keys(config.train.seed)["eval"], 1)
  out = {"num_samples": num_samples}
  if supports(model, "reconstruct"):
    count = reconstruction_images or len(ref.test_images)
    recon = reconstruct(model, variables, ref.test_images[:count], ref.test_labels[:count],
                        min(config.train.eval_batch_size, count), progress,
                        cpu_compiler.of_config(config))
    out["reconstructions"] = {"fid_lenet": ref.fid(recon, "reconstruction features")}
    if pictures is not None:  # Test digits in the top row, their reconstructions below.
      pictures["reconstructions"] = viz.grid(np.concatenate(
          [ref.test_images[:PICTURE_RECONSTRUCTIONS], recon[:PICTURE_RECONSTRUCTIONS]]),
          ncol=PICTURE_RECONSTRUCTIONS)
    if count < len(ref.test_images):
      out["reconstructions"]["images"] = count
    took("reconstructions")
  if supports(model, "sample"):
    check_num_samples(num_samples)
    out["samples"], _, samples = score_samples(ref, config, model, variables, num_samples,
                                               progress)
    if pictures is not None:
      shown = samples[:PICTURE_SAMPLES]
      pictures["samples"] = viz.grid(shown, report.grid_columns(
          model, len(shown), data.info(config.data.dataset).num_classes))
    took("samples")
  if supports(model, "log_importance_weights") and iwae_samples > 0:
    # A model of binarized digits is scored on the fixed binarization of the test set.
    images = (data.binarized(ref.test_images) if config.data.binarize == "dynamic"
              else ref.test_images)
    count = iwae_images or len(images)
    per_image = likelihood.iwae_nll_per_image(
        model, variables, images[:count], ref.test_labels[:count], jax.random.fold_in(key, 4),
        iwae_samples, progress=progress, decodes_per_pass=iwae_decodes_per_pass,
        compiler_options=cpu_compiler.of_config(config))
    out[f"iwae_nll_k{iwae_samples}"] = float(per_image.mean())
    # The standard error over images: how far another set of `count` test images could move it.
    out[f"iwae_nll_k{iwae_samples}_stderr"] = float(per_image.std(ddof=1) / np.sqrt(count))
    if count < len(images):
      out["iwae_images"] = count
    took(f"iwae_k{iwae_samples}")
  out["seconds"] = seconds
  return out


def evaluate_run(workdir: str, num_samples: int = 10000, iwae_samples: int = 50,
                 progress: bool = True, ref: Reference | None = None, config=None,
                 iwae_images: int = 0, iwae_decodes_per_pass: int | None = None,
                 reconstruction_images: int = 0, pictures: dict | None = None,
                 trust_unverified: bool = False) -> dict:
  """evaluate_variables of the run in workdir, at its latest checkpoint; config: its config with
  sampling fields changed (e.g. sample_steps), else the saved one."""
  config, _, model, state = runs.restore_run(workdir, config=config,
                                             trust_unverified=trust_unverified)
  return {"step": int(state.step), **evaluate_variables(
      config, model, state.variables(), num_samples, iwae_samples, progress, ref, iwae_images,
      iwae_decodes_per_pass, reconstruction_images, pictures)}


def summary_scalars(evaluation: dict) -> dict:
  """eval.json's 'evaluation' block as TensorBoard scalars: 'eval/samples/fid_lenet',
  'eval/iwae_nll_k50', 'eval/samples/label_accuracy/digit_3', ... (not the timings)."""
  out = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{prefix}/{k}", v)
    elif isinstance(value, list):
      for d, v in enumerate(value):
        walk(f"{prefix.removesuffix('_per_digit')}/digit_{d}", v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[prefix] = float(value)

  for key, value in evaluation.items():
    if key not in ("step", "seconds", "sampling", "calibration_source", "part_steps", "stale"):
      walk(f"eval/{key}", value)
  return out


def save_evaluation(workdir: str, evaluation: dict) -> str:
  """Merges `evaluation` into workdir/eval.json part by part (runs.update_evaluation: the
  training results and the parts it did not compute stay); returns its path. The caller holds
  the workdir's lock (runs.lock)."""
  return runs.update_evaluation(workdir, evaluation)


def evaluate_trained_run(workdir: str, num_samples: int, iwae_samples: int,
                         reconstruction_images: int = 0, progress: bool = True,
                         print_fn=print, trust_unverified: bool = False) -> dict | None:
  """What the train binary runs after training: evaluate_run (no calibration rows) of the run
  just trained, saved as eval.json's 'evaluation' block and returned; None (nothing stored) for
  a model that does not generate, or a dataset without the evaluation classifier. Holds the
  workdir's lock meanwhile: an mnistgen-evaluate of the same run is refused, not interleaved."""
  with runs.lock(workdir):
    config, _, model, state = runs.restore_run(workdir, trust_unverified=trust_unverified)
    if not supports(model, "sample"):
      return None
    pictures = {}
    try:
      evaluation = {"step": int(state.step), **evaluate_variables(
          config, model, state.variables(), num_samples, iwae_samples, progress,
          reconstruction_images=reconstruction_images, pictures=pictures)}
    except features_lib.FeatureNetworkError as e:
      print_fn(f"evaluation skipped: {e}")
      return None
    save_evaluation(workdir, evaluation)
    runs.write_summaries(workdir, evaluation["step"], summary_scalars(evaluation),
                         {f"eval/{k}": v for k, v in pictures.items()})
    return runs.read_eval_json(workdir)["evaluation"]
