"""`cond_vae`: the class-conditional convolutional VAE (Sohn et al. 2015)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import conv_vae

PRESETS = {"1m": dict(hidden=(140,))}  # 1.001 M
validate = conv_vae.validate


def get_config(preset: str = ""):
  config = conv_vae.get_config()
  config.family = "cond_vae"
  return configs.with_preset(config, preset)
