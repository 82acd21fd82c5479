"""A finished run's outputs: reconstructions.png, samples.png, latent.png, curves.png, eval.json."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import viz
from mnistgen_jax import train as train_lib


def sampling_variables(family, model, variables, train_data, batch_size: int):
  """The variables to sample with: for families without a prior, one fitted to training codes."""
  if family.fit_prior is None:
    return variables
  codes = train_lib.make_applier(model, "encode", batch_size)(variables, *train_data)
  return family.fit_prior(variables, np.asarray(codes))


def run_sampling_variables(config, family, model, variables):
  """sampling_variables for a restored run, loading its training set when a prior is fitted."""
  if family.fit_prior is None:
    return variables
  from mnistgen_jax import data
  train = data.load(config.dataset, "train", limit=config.train_size or None,
                    source=config.data_source, data_dir=config.data_dir or None)
  return sampling_variables(family, model, variables, train, config.eval_batch_size)


def sample_labels(family, num_samples: int) -> jnp.ndarray:
  """Conditional families: 10 of each digit (a 10x10 grid, a row per digit)."""
  if family.conditional:
    return jnp.repeat(jnp.arange(10, dtype=jnp.int32), 10)
  return jnp.zeros((num_samples,), jnp.int32)


def make_sampler(model):
  """Jitted (variables, labels, key) -> len(labels) images in [0,1]."""
  return jax.jit(lambda v, y, k: model.apply(v, y, method="sample", rngs={"sample": k}))


def grid_columns(family, num: int) -> int:
  """Conditional samples come 10 per digit (a row each); others in a square-ish grid."""
  return 10 if family.conditional else int(np.ceil(np.sqrt(num)))


def _series(records, split):
  out = {}
  for r in records:
    if r["split"] == split:
      for k, v in r.items():
        if k not in ("step", "epoch", "split", "train_seconds") and not isinstance(v, list):
          out.setdefault(k, ([], []))
          out[k][0].append(r["step"])
          out[k][1].append(v)
  return out


def write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def write_outputs(family, model, variables, config, workdir, train_data, test_data, records,
                  result) -> None:
  viz.save_curves(os.path.join(workdir, "curves.png"), _series(records, "train"),
                  _series(records, "test"), f"{config.model} on {config.dataset}")
  if family.extra_outputs is not None:
    result["test"].update(family.extra_outputs(model, variables, *test_data, workdir))
  write_json(os.path.join(workdir, "eval.json"), result)
  if not hasattr(model, "sample"):
    return  # Not generative (the evaluation classifier): no pictures of digits to draw.
  test_x, test_y = test_data
  keys = train_lib.root_keys(config.seed)
  if hasattr(model, "reconstruct"):  # GANs have no encoder.
    n = 16
    recon = train_lib.make_applier(model, "reconstruct", n)(variables, test_x[:n], test_y[:n])
    viz.save_grid(os.path.join(workdir, "reconstructions.png"),
                  np.concatenate([viz.to_uint8(test_x[:n]), viz.to_uint8(recon)]), ncol=n)

  variables = sampling_variables(family, model, variables, train_data, config.eval_batch_size)
  labels = sample_labels(family, config.num_samples)
  samples = make_sampler(model)(variables, labels, keys["sample"])
  viz.save_grid(os.path.join(workdir, "samples.png"), samples,
                ncol=grid_columns(family, len(labels)))

  if hasattr(model, "encode"):
    codes = train_lib.make_applier(model, "encode", config.eval_batch_size)(variables, test_x, test_y)
    viz.save_latent_scatter(os.path.join(workdir, "latent.png"),
                            [(codes, np.asarray(test_y), latent_title(config, codes))])


def latent_title(config, codes) -> str:
  return f"{config.model}: test-set codes ({np.shape(codes)[-1]}-D)"


def markdown_table(header, rows) -> str:
  """A GitHub markdown table; floats get 3 decimals (4 significant digits when small)."""
  def cell(v):
    if isinstance(v, float):
      return f"{v:.3f}" if abs(v) >= 0.1 else f"{v:.4g}"
    return "" if v is None else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


class EpochSnapshot:
  """Per-epoch view of a generator: samples_epoch_NNN.png from one fixed noise batch, and the
  evaluation classifier's digit histogram of 1000 samples (a mode-collapse signal)."""

  def __init__(self, family, model, config, workdir: str, num_classified: int = 1000):
    self.family, self.config, self.workdir = family, config, workdir
    self.key = jax.random.fold_in(train_lib.root_keys(config.seed)["sample"], 7)
    self.labels = sample_labels(family, config.num_samples)
    self.classified_labels = jnp.arange(num_classified, dtype=jnp.int32) % 10
    self.sample = make_sampler(model)
    self.classifier = None
    try:
      from mnistgen_jax.metrics import features  # Evaluation weights, when the dataset has them.
      net, variables = features.load_classifier(config.dataset)
      self.classifier = jax.jit(lambda x: net.apply(variables, x).argmax(-1))
    except features.FeatureNetworkError:
      pass

  def __call__(self, variables, epoch: int) -> dict:
    images = self.sample(variables, self.labels, self.key)
    viz.save_grid(os.path.join(self.workdir, f"samples_epoch_{epoch:03d}.png"), images,
                  ncol=grid_columns(self.family, len(self.labels)))
    if self.classifier is None:
      return {}
    digits = self.classifier(self.sample(variables, self.classified_labels,
                                         jax.random.fold_in(self.key, 1)))
    hist = np.bincount(np.asarray(digits), minlength=10) / len(digits)
    entropy = float(-(hist[hist > 0] * np.log(hist[hist > 0])).sum()) + 0.0  # never -0.0
    return {"sample_digit_entropy": entropy, "sample_digit_hist": [float(h) for h in hist]}
