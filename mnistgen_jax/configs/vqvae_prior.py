"""`vqvae_prior`: an autoregressive transformer prior over a trained VQ-VAE's codes (stage 2)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

PRESETS = {"1m": dict(prior_width=120, prior_layers=3)}  # 0.560 M (+ the 0.450 M VQ-VAE)


def get_config(preset: str = ""):
  config = base.get_config("vqvae_prior")
  config.learning_rate = 1e-3
  config.lr_schedule = "cosine"
  config.stage1_workdir = ""   # the trained VQ-VAE run (--vqvae_workdir is the old name)
  config.prior_width = 128
  config.prior_layers = 2
  config.prior_heads = 4
  config.temperature = 1.0     # sampling temperature (may change on resume / in generate)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "prior_width", "prior_layers", "prior_heads")
  base.check(config.prior_width % config.prior_heads == 0,
             f"--prior_width={config.prior_width} must be divisible by "
             f"--prior_heads={config.prior_heads}")
  base.check(config.temperature > 0, f"--temperature must be > 0, got {config.temperature}")
