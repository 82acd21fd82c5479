"""`vqvae_cond_prior`: the class-conditional transformer prior over a VQ-VAE's codes."""
from mnistgen_jax import configs
from mnistgen_jax.configs import vqvae_prior

PRESETS = vqvae_prior.PRESETS
validate = vqvae_prior.validate


def get_config(preset: str = ""):
  config = vqvae_prior.get_config()
  config.family = "vqvae_cond_prior"
  return configs.with_preset(config, preset)
