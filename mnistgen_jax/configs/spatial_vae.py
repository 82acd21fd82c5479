"""`spatial_vae`: a VAE with a 7x7xC grid code, the stage 1 of latent_flow's grid prior."""
from mnistgen_jax import configs, data
from mnistgen_jax.configs import base


def get_config(preset: str = ""):
  config = base.get_config("spatial_vae")
  config.model.channels = (32, 64)      # conv widths, each a stride-2 layer: 28 -> 14 -> 7
  config.model.latent_channels = 2      # channels C of the 7x7 code grid (at 4, two go unused)
  config.model.blocks = 1               # residual blocks at the code resolution, each side
  config.model.activation = "relu"      # relu | tanh
  config.model.kl_weight = 0.1          # weight of the KL term in the loss (1: the ELBO)
  config.run.num_epochs = 5             # reconstructions at fid_lenet ~2.3 in ~4 CPU minutes
  config.run.train_loop = "steps"       # native convolutions, as conv_vae (docs/performance.md)
  config.run.ynn_fusions = False
  return configs.with_preset(config, preset)


def validate(config):
  base.check_widths(config, "channels", 1, 3)
  base.check_positive(config, "latent_channels")
  base.check(int(config.model.blocks) >= 0, f"--blocks must be >= 0, got {config.model.blocks}")
  base.check_choice(config, "activation", ("relu", "tanh"))
  base.check(0 < config.model.kl_weight <= 1,
             f"--kl_weight must be in (0, 1], got {config.model.kl_weight}")
  size = data.info(config.data.dataset).image_shape[0]
  halvings = len(config.model.channels)
  base.check(size % 2**halvings == 0,
             f"--channels: {size}x{size} images cannot be halved {halvings} times; give fewer")
