"""`vae`: the MLP VAE, pytorch/examples recipe (784-400-20). conv_vae and cond_vae start here."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

# Widths for about 1 M trained parameters (experiments.budget --preset=1m).
PRESETS = {"1m": dict(hidden=(615,))}  # 1.003 M


def get_config(preset: str = ""):
  config = base.get_config("vae")
  config.arch = "mlp"            # mlp | conv
  config.latent_dim = 20         # latent dimension (2 draws latent.png directly)
  config.hidden = (400,)         # dense widths after the (optional) conv stack
  config.channels = (32, 64)     # conv widths, each a stride-2 layer (arch=conv)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_choice(config, "arch", ("mlp", "conv"))
  base.check_positive(config, "latent_dim")
  base.check_widths(config, "hidden")
  base.check_widths(config, "channels", 1, 2)
