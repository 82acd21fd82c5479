"""`vqvae_prior`: an autoregressive transformer prior over a trained VQ-VAE's codes (stage 2)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

PRESETS = {"1m": dict(prior_width=120, prior_layers=3)}  # 0.560 M (+ the 0.450 M VQ-VAE)


def get_config(preset: str = ""):
  config = base.get_config("vqvae_prior")
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = "cosine"
  config.model.stage1_workdir = ""       # the trained VQ-VAE run (--vqvae_workdir is the old name)
  config.model.prior_width = 128         # the transformer's width
  config.model.prior_layers = 2          # its blocks
  config.model.prior_heads = 4           # attention heads (dividing the width)
  config.sampling.temperature = 1.0      # sampling temperature of the codes' softmax
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "prior_width", "prior_layers", "prior_heads")
  base.check(config.model.prior_width % config.model.prior_heads == 0,
             f"--prior_width={config.model.prior_width} must be divisible by "
             f"--prior_heads={config.model.prior_heads}")
  base.check(config.sampling.temperature > 0,
             f"--temperature must be > 0, got {config.sampling.temperature}")
