"""A finished run's outputs: reconstructions.png, samples.png, latent.png, curves.png, eval.json."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import cpu_compiler, data, viz
from mnistgen_jax.metrics import sample_metrics
from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import supports


def sample_labels(model, num_samples: int, num_classes: int) -> jnp.ndarray:
  """Conditional models: num_classes of each class (a square grid, a row per class)."""
  if model.conditional:
    return jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), num_classes)
  return jnp.zeros((num_samples,), jnp.int32)


def make_sampler(model, compiler_options: dict | None = None):
  """Jitted (variables, labels, key) -> len(labels) images in [0,1]; compiler_options: jax.jit's,
  e.g. cpu_compiler.of_config(config) (speed only)."""
  return jax.jit(lambda v, y, k: model.apply(v, y, method="sample", rngs={"sample": k}),
                 compiler_options=compiler_options)


def grid_columns(model, num: int, num_classes: int) -> int:
  """Conditional samples come num_classes per class (a row each); others in a square-ish grid."""
  return num_classes if model.conditional else int(np.ceil(np.sqrt(num)))


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


def write_outputs(family, model, variables, config, workdir, test_data, records, result) -> None:
  """curves.png, reconstructions.png, samples.png and latent.png, as far as the model has the
  methods; the family's own report metrics go into result['test']."""
  viz.save_curves(os.path.join(workdir, "curves.png"), _series(records, "train"),
                  _series(records, "test"), f"{config.family} on {config.data.dataset}")
  result["test"].update(family.training.report(model, variables, *test_data, workdir))
  if not supports(model, "sample"):
    return  # Not generative (the evaluation classifier): no pictures of digits to draw.
  test_x, test_y = test_data
  keys = train_lib.root_keys(config.train.seed)
  if supports(model, "reconstruct"):  # GANs have no encoder.
    n = 16
    recon = train_lib.make_applier(model, "reconstruct", n)(variables, test_x[:n], test_y[:n])
    viz.save_grid(os.path.join(workdir, "reconstructions.png"),
                  np.concatenate([viz.to_uint8(test_x[:n]), viz.to_uint8(recon)]), ncol=n)

  num_classes = data.info(config.data.dataset).num_classes
  labels = sample_labels(model, config.run.num_samples, num_classes)
  samples = make_sampler(model, cpu_compiler.of_config(config))(variables, labels, keys["sample"])
  viz.save_grid(os.path.join(workdir, "samples.png"), samples,
                ncol=grid_columns(model, len(labels), num_classes))

  if supports(model, "encode"):
    codes = train_lib.make_applier(model, "encode", config.train.eval_batch_size)(variables, test_x,
                                                                                  test_y)
    viz.save_latent_scatter(os.path.join(workdir, "latent.png"),
                            [(codes, np.asarray(test_y), latent_title(config, codes))])


def latent_title(config, codes) -> str:
  return f"{config.family}: test-set codes ({np.shape(codes)[-1]}-D)"


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

  def __init__(self, model, config, workdir: str, num_classified: int = 1000):
    self.model, self.config, self.workdir = model, config, workdir
    self.num_classes = data.info(config.data.dataset).num_classes
    self.key = jax.random.fold_in(train_lib.root_keys(config.train.seed)["sample"], 7)
    self.labels = sample_labels(model, config.run.num_samples, self.num_classes)
    self.classified_labels = jnp.arange(num_classified, dtype=jnp.int32) % self.num_classes
    self.sample = make_sampler(model, cpu_compiler.of_config(config))
    self.classifier = None
    try:
      from mnistgen_jax.metrics import features  # Evaluation weights, when the dataset has them.
      net, variables = features.load_classifier(config.data.dataset)
      self.classifier = jax.jit(lambda x: net.apply(variables, x).argmax(-1))
    except features.FeatureNetworkError:
      pass

  def __call__(self, variables, epoch: int) -> dict:
    images = self.sample(variables, self.labels, self.key)
    viz.save_grid(os.path.join(self.workdir, f"samples_epoch_{epoch:03d}.png"), images,
                  ncol=grid_columns(self.model, len(self.labels), self.num_classes))
    if self.classifier is None:
      return {}
    digits = self.classifier(self.sample(variables, self.classified_labels,
                                         jax.random.fold_in(self.key, 1)))
    hist, entropy = sample_metrics.digit_histogram(digits, self.num_classes)
    return {"sample_digit_entropy": entropy, "sample_digit_hist": [float(h) for h in hist]}
