"""`vqvae`: VQ-VAE on a grid of codes (a quarter of the image side), EMA or gradient codebook."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

PRESETS = {"1m": dict(channels=(64, 128))}  # 0.450 M, then a prior of 0.560 M


def get_config(preset: str = ""):
  config = base.get_config("vqvae")
  config.model.channels = (32, 64)       # conv widths, each a stride-2 layer
  config.model.num_codes = 128           # codebook size K
  config.model.code_dim = 16             # code dimension D
  config.model.codebook_mode = "ema"     # ema | gradient
  config.model.ema_decay = 0.99          # ema codebook: the decay of its running averages
  config.model.commitment_cost = 0.25    # beta
  config.model.restart_after = 100       # EMA: restart codes unused this many steps (0: never)
  # Native convolutions in a Python loop of jitted steps: 1.2x the scanned patches on CPU
  # (docs/performance.md), as for the conv VAEs.
  config.run.train_loop = "steps"
  config.run.ynn_fusions = False  # XLA:CPU's own kernels: 1.15-1.3x the train step (docs/performance.md)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_choice(config, "codebook_mode", ("ema", "gradient"))
  base.check(0 <= config.model.ema_decay < 1,
             f"--ema_decay must be in [0, 1), got {config.model.ema_decay}")
  base.check_positive(config, "num_codes", "code_dim")
  base.check(config.model.restart_after >= 0,
             f"--restart_after must be >= 0, got {config.model.restart_after}")
  base.check_widths(config, "channels", 1, 2)
