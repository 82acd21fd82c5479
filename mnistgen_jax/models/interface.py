"""The family interface: what a model module may implement, and how a family trains.

A family is one model file that registers a `Family` (models/registry.py) plus one config file
(configs/<name>.py). Nothing outside the family file branches on its name or probes it piecemeal:
the loop, the evaluators and the binaries read only what is written down here.

Model modules (Flax linen). x: float images (B, H, W, C) in [0, 1]; y: int labels (B,), ignored by
unconditional models; randomness comes from the 'sample' rng stream.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

import flax.linen as nn

from mnistgen_jax import train as train_lib


class GenerativeModel(Protocol):
  """What a family's module implements. Only `losses` is required; the outputs that need an
  optional method are skipped for a module without it (see `supports`)."""

  conditional: bool           # samples and codes depend on the label y
  latent_interpolation: str   # how --interpolate walks between two codes: 'slerp' | 'lerp'

  def losses(self, x, y, train: bool = False) -> dict:
    """Per-example (B,) terms; 'loss' is the one optimised (the default training step)."""

  def reconstruct(self, x, y):
    """Images in [0, 1] decoded from x's codes (encoder families)."""

  def encode(self, x, y):
    """(B, d) deterministic codes (posterior means)."""

  def decode(self, z, y):
    """Images in [0, 1] from codes like encode's."""

  def sample(self, y):
    """len(y) images in [0, 1] from noise (through the family's prior)."""

  def log_importance_weights(self, x, y, num_samples: int, samples_per_pass: int = 0):
    """(B, K) log p(x, z_k) - log q(z_k | x), z_k ~ q: the terms of the IWAE likelihood bound.
    samples_per_pass > 0: decode that many of the K samples at a time (nets.map_over_samples:
    the same draws and values, a working set that fits in cache; the evaluation sets it)."""

  def log_density(self, u, y, steps: int, num_probes: int = 1):
    """(B,) log-density of continuous images u in [0, 1] (dequantized pixels) under a continuous
    model (the pixel flows' ODE; metrics.likelihood.dequantized_bits_per_dim)."""


OPTIONAL_METHODS = ("reconstruct", "encode", "decode", "sample", "log_importance_weights",
                    "log_density")


def supports(model: nn.Module, method: str) -> bool:
  """Whether a module implements one of the interface's optional methods (the one place that asks)."""
  if method not in OPTIONAL_METHODS:
    raise ValueError(f"{method!r} is not an optional method of the family interface")
  return callable(getattr(type(model), method, None))


@dataclasses.dataclass(frozen=True)
class Stage1:
  """A trained run that a multi-stage family builds on (e.g. the VQ-VAE under its prior), loaded by
  the caller (runs.load_stage1), never by the model file."""
  workdir: str
  config: Any      # the stage-1 run's config
  model: nn.Module
  variables: dict  # its trained variables, every collection

  def insert_into(self, variables: dict, name: str) -> dict:
    """variables with the trained stage 1 put, collection by collection, where the submodule
    `name` of the multi-stage module keeps it."""
    trained = self.variables
    return {c: {**v, name: trained[c]} if c in trained else v for c, v in variables.items()}


class Training:
  """How the shared loop trains a family: the ONE place a family customises training.

  The defaults are the shared recipe (Adam on the 'loss' term, one update per step). A family
  subclasses this and overrides what differs; nothing else changes for it.
  """
  # Write samples_epoch_NNN.png and the digit histogram of samples at each epoch end.
  epoch_snapshots: bool = False

  def optimizer(self, config, total_steps: int):
    """An optax-like object with .init(params); default: Adam, optionally cosine-decayed."""
    return train_lib.make_optimizer(config, total_steps)

  def learning_rates(self, config, total_steps: int) -> dict:
    """{TensorBoard name: rate or schedule} of the optimizer's learning rates."""
    return {"learning_rate": train_lib.learning_rate(config, total_steps)}

  def init_variables(self, config, variables: dict, stage1: Optional[Stage1]) -> dict:
    """Freshly initialised variables -> the run's initial ones (pretrained parts, EMA copies)."""
    del config, stage1
    return variables

  def train_inputs(self, model, config, variables: dict, images, labels):
    """What the step reads for each training example, computed once before the epochs (and
    again on resume, so it must depend on frozen variables only): the uint8 images by default;
    a family on a frozen stage 1 may return its codes, so the frozen encoder runs once rather
    than at every step of every epoch. Test evaluation, pictures and metrics still get images."""
    del model, config, variables, labels
    return images

  def step(self, model, tx, config) -> Callable:
    """(state, x, y) -> (state, metrics), pure and jittable; default: one Adam step on 'loss'.
    x: a batch of train_inputs (images as float in [0, 1])."""
    del config
    return train_lib.make_train_step(model, tx)

  def fit_prior(self, model, config) -> Optional[Callable]:
    """None, or fit(variables, train images uint8, labels) -> variables with a sampling prior
    fitted to the training codes. Run before every checkpoint, so every checkpoint can sample."""
    del model, config
    return None

  def report(self, model, variables, images, labels, workdir: str) -> dict:
    """Family-specific test metrics (and figures written into workdir) after training."""
    del model, variables, images, labels, workdir
    return {}


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  build: Callable[..., nn.Module]  # (config, stage1: Stage1 | None) -> module
  training: Training = Training()
  loss_name: str = "loss"          # what the optimised 'loss' term is, as reported in eval.json
  # Multi-stage families: the families whose trained run (config.model.stage1_workdir) they
  # build on.
  stage1_families: tuple[str, ...] = ()
  description: str = ""
