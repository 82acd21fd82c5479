"""The Python API: a trained run as an object.

  import mnistgen_jax
  run = mnistgen_jax.load_run("runs/cond_vae")
  images, labels = run.sample(100, seed=0, digit=7)   # uint8 (100, 28, 28), int32 (100,)
  codes = run.encode(images, labels)                  # encoder families
  again = run.decode(codes, labels)                   # uint8 (100, 28, 28)
  scores = run.evaluate()                             # the dict eval.json's 'evaluation' holds

The binaries (mnistgen-generate, mnistgen-evaluate) are built on the same calls, so a figure
read here is the figure they print.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import configs, cpu_compiler, data, evaluation, report, runs, viz
from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import supports


@dataclasses.dataclass
class Run:
  """A run restored from its workdir at one checkpoint: its config, model and variables."""
  workdir: str
  config: Any         # the run's config (ml_collections), with any sampling overrides
  model: Any          # the family's Flax module
  variables: dict     # trained variables, every collection (a fitted sampling prior included)
  step: int           # the checkpoint's training step

  @property
  def family(self) -> str:
    return self.config.family

  @property
  def conditional(self) -> bool:
    return bool(self.model.conditional)

  @property
  def num_classes(self) -> int:
    return data.info(self.config.data.dataset).num_classes

  @property
  def image_shape(self) -> tuple[int, ...]:
    """The shape of one image as sample() returns it: (28, 28) for MNIST's one channel."""
    shape = tuple(data.info(self.config.data.dataset).image_shape)
    return shape[:-1] if shape[-1] == 1 else shape

  def supports(self, method: str) -> bool:
    """Whether the family has encode, decode, reconstruct, sample, ... (models.supports)."""
    return supports(self.model, method)

  def labels_for(self, num: int, digit: int | None = None) -> np.ndarray:
    """The labels sample() draws with: `digit` for all, else 0, 1, ..., 9, 0, 1, ... (drawn order)."""
    if digit is not None:
      if not self.conditional:
        raise ValueError(f"digit= needs a conditional model; {self.family!r} is unconditional "
                         "(try cond_vae, vqvae_cond_prior, cond_dcgan, or latent_flow over a "
                         "cond_vae run)")
      if not 0 <= digit < self.num_classes:
        raise ValueError(f"digit must be in 0..{self.num_classes - 1}, got {digit}")
      return np.full(num, digit, np.int32)
    return np.arange(num, dtype=np.int32) % self.num_classes

  def sample_batches(self, num: int, seed: int = 0, digit: int | None = None,
                     batch_size: int = 1000, progress: bool = False
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 (B, 28, 28) images) batch by batch: `num` samples in bounded memory."""
    self._check("sample")
    if num <= 0:
      raise ValueError(f"the number of samples must be a positive integer, got {num}")
    labels = self.labels_for(num, digit)
    sampler = report.make_sampler(self.model, cpu_compiler.of_config(self.config))
    for start, images in evaluation.generate_batches(
        self.model, self.variables, labels, jax.random.PRNGKey(seed), min(num, batch_size),
        progress, sampler):
      yield start, _drop_channel(images)

  def sample(self, num: int, seed: int = 0, digit: int | None = None, batch_size: int = 1000,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels): uint8 (num, 28, 28) samples and, for a conditional model, the int32
    labels they were drawn for (`digit`, else 0..9 cycling); None for unconditional families."""
    images = np.concatenate([b for _, b in self.sample_batches(num, seed, digit, batch_size,
                                                               progress)])
    return images, (self.labels_for(num, digit) if self.conditional else None)

  def encode(self, images, labels=None) -> np.ndarray:
    """Deterministic codes (posterior means) of uint8 images (N, 28, 28[, 1])."""
    self._check("encode")
    return np.asarray(self._apply("encode", train_lib.to_float(self._images(images)),
                                  self._labels(labels, len(images))))

  def decode(self, codes, labels=None) -> np.ndarray:
    """uint8 images (N, 28, 28) decoded from codes like encode's."""
    self._check("decode")
    return _drop_channel(viz.to_uint8(self._apply("decode", jnp.asarray(codes),
                                                  self._labels(labels, len(codes)))))

  def reconstruct(self, images, labels=None) -> np.ndarray:
    """uint8 images (N, 28, 28): the model's reconstructions of uint8 images."""
    self._check("reconstruct")
    return _drop_channel(viz.to_uint8(self._apply(
        "reconstruct", train_lib.to_float(self._images(images)), self._labels(labels, len(images)))))

  def evaluate(self, num_samples: int = 10000, iwae_samples: int = 50, save: bool = False,
               progress: bool = False, **options) -> dict:
    """Every evaluation that fits the model (as mnistgen-evaluate): the dict eval.json's
    'evaluation' block holds. save: also store it there. options: evaluation.evaluate_variables'
    (iwae_images, reconstruction_images, ...)."""
    scores = {"step": self.step, **evaluation.evaluate_variables(
        self.config, self.model, self.variables, num_samples, iwae_samples, progress,
        **options)}
    if save:
      with runs.lock(self.workdir):  # Refused while a training or evaluation writes the run.
        evaluation.save_evaluation(self.workdir, scores)
    return scores

  def _check(self, method: str) -> None:
    if not self.supports(method):
      raise ValueError(f"{self.workdir} holds a {self.family!r} run, which has no {method}")

  def _apply(self, method: str, *args):
    return jax.jit(lambda v, *a: self.model.apply(v, *a, method=method))(self.variables, *args)

  def _images(self, images) -> jnp.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 pixels (0..255), got {images.dtype}")
    shape = data.info(self.config.data.dataset).image_shape
    if images.ndim == len(shape) and shape[-1] == 1:
      images = images[..., None]  # (N, 28, 28) -> (N, 28, 28, 1)
    if images.shape[1:] != tuple(shape):
      raise ValueError(f"images must be (N, {', '.join(map(str, shape[:-1]))}), got "
                       f"{images.shape}")
    return jnp.asarray(images)

  def _labels(self, labels, num: int) -> jnp.ndarray:
    if labels is None:
      if self.conditional:
        raise ValueError(f"{self.family!r} is conditional: pass the labels too")
      return jnp.zeros(num, jnp.int32)
    labels = np.asarray(labels, np.int32)
    if labels.shape != (num,):
      raise ValueError(f"labels must be ({num},), got {labels.shape}")
    return jnp.asarray(labels)


def _drop_channel(images: np.ndarray) -> np.ndarray:
  return images[..., 0] if images.shape[-1] == 1 else images


def load_run(workdir: str, step: int | None = None, trust_unverified_checkpoint: bool = False,
             **sampling) -> Run:
  """The run in workdir at its latest (or the given) checkpoint; sampling: overrides of its
  sampling fields (temperature=0.5, sample_steps=20, guidance=2.0, ...);
  trust_unverified_checkpoint: load one whose digests are missing (at your own risk)."""
  config = runs.load_config(workdir)
  for name, value in sampling.items():
    if name not in config.sampling:
      known = ", ".join(config.sampling) or "none"
      raise ValueError(f"{name}= is not a sampling field of {config.family!r} runs "
                       f"(they have: {known})")
    config.sampling[name] = value
  config, _, model, state = runs.restore_run(workdir, step, config=configs.validate(config),
                                             trust_unverified=trust_unverified_checkpoint)
  return Run(workdir, config, model, state.variables(), int(state.step))
