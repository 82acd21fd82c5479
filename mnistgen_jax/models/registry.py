"""Model families by name. A family is a Flax module plus defaults; the loop never branches on names.

A family's module implements these methods (x: float images (B,28,28,1) in [0,1], y: int labels (B,),
ignored by unconditional models; randomness comes from the 'sample' rng stream):
  losses(x, y, train)  -> dict of per-example (B,) arrays; 'loss' is the term that is optimised
  reconstruct(x, y)    -> images in [0,1]
  encode(x, y)         -> (B, latent_dim) deterministic codes (posterior means)
  decode(z, y)         -> images in [0,1] from codes like encode's
  sample(y)            -> len(y) images in [0,1]
Only `losses` is required; the outputs that need the others are skipped for a module without them
(the evaluation classifier). Optional: log_importance_weights(x, y, num_samples) for IWAE bounds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import numpy as np

_FAMILIES: dict[str, "Family"] = {}


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  build: Callable[[Any], nn.Module]  # config -> module
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  conditional: bool = False
  loss_name: str = "loss"  # what the optimised 'loss' term is, as reported in eval.json
  # Optional: (model, variables, test images, test labels, workdir) -> extra test metrics,
  # after writing any family-specific figures into workdir.
  extra_outputs: Optional[Callable[..., dict]] = None
  # Optional: (config, initial variables) -> variables with pretrained parts loaded.
  init_variables: Optional[Callable[[Any, dict], dict]] = None
  # Optional replacements of train.make_optimizer (config, total_steps) -> object with .init,
  # and of train.make_train_step (model, tx, config) -> step, for e.g. alternating GAN updates.
  make_optimizer: Optional[Callable[..., Any]] = None
  make_train_step: Optional[Callable[..., Callable]] = None
  # Save samples_epoch_NNN.png from fixed noise and the classifier's digit histogram each epoch.
  snapshot_samples: bool = False
  # Optional: (variables, codes of the training set as np.ndarray) -> variables with a fitted prior.
  fit_prior: Optional[Callable[[dict, np.ndarray], dict]] = None
  # How --interpolate walks between two codes: 'slerp' for Gaussian latents, else 'lerp'.
  interpolation: str = "lerp"
  description: str = ""


def register(family: Family) -> Family:
  if family.name in _FAMILIES:
    raise ValueError(f"model family {family.name!r} is registered twice")
  _FAMILIES[family.name] = family
  return family


def names() -> list[str]:
  return sorted(_FAMILIES)


def get(name: str) -> Family:
  if name not in _FAMILIES:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
  return _FAMILIES[name]
