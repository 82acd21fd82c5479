"""`dcgan`: DCGAN (Radford et al. 2015); Adam(2e-4, beta1=0.5) per network."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

PRESETS = {"1m": dict(channels=(112, 224))}  # 1.010 M (G 0.37 M)


def get_config(preset: str = ""):
  config = base.get_config("dcgan")
  config.learning_rate = 2e-4
  config.latent_dim = 64
  config.channels = (64, 128)    # the discriminator's widths (14x14, 7x7); G mirrors at half
  config.gan_ema_decay = 0.999   # EMA of the generator's weights for sampling (0: off)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "latent_dim")
  base.check_widths(config, "channels", 2, 2)
  base.check(0 <= config.gan_ema_decay < 1,
             f"--gan_ema_decay must be in [0, 1), got {config.gan_ema_decay}")
