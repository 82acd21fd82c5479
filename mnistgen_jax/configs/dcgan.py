"""`dcgan`: DCGAN (Radford et al. 2015); Adam(beta1=0.5) per network. Defaults chosen by the
two ablations (docs/families.md; 10 epochs, fid_lenet of 10,000 samples: G 128,64, R1 and the EMA's own
statistics by the first; hidden 1024 and batch 64, together better than either alone, by the
second)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

# The 1 M budget keeps the first ablation's architecture (no hidden layers: those alone are 12.5 M).
PRESETS = {"1m": dict(channels=(112, 224), generator_channels=(112, 56), gan_hidden=0,
                      batch_size=128)}  # 1.010 M (G 0.37 M)

# Runs saved before these fields existed: G mirrored D's widths at half, the EMA generator had no
# statistics of its own, and there was no R1, TTUR or smoothing (a value or f(saved config)).
ABSENT_IN_OLDER_RUNS = {
    "generator_channels": lambda saved: [c // 2 for c in reversed(saved.get("channels", (64, 128)))],
    "gan_ema_batch_stats": False, "gan_r1_gamma": 0.0, "gan_d_learning_rate": 0.0,
    "gan_label_smoothing": 0.0, "gan_hidden": 0}


def get_config(preset: str = ""):
  config = base.get_config("dcgan")
  config.train.batch_size = 64                 # InfoGAN's and Lucic et al.'s; 2x the updates of 128
  config.train.learning_rate = 2e-4  # the generator's (and D's when gan_d_learning_rate is 0)
  config.model.gan_d_learning_rate = 0.0       # TTUR: D's own learning rate (0: learning_rate)
  config.model.latent_dim = 64                 # the generator's noise dimension
  config.model.channels = (64, 128)            # the discriminator's widths (14x14, 7x7)
  config.model.generator_channels = (128, 64)  # the generator's widths (7x7, 14x14)
  config.model.gan_hidden = 1024  # a dense hidden layer in G and D (InfoGAN's; 0: none)
  config.model.gan_ema_decay = 0.999  # EMA of the generator's weights for sampling (0: off)
  config.model.gan_ema_batch_stats = True  # the EMA weights get BatchNorm statistics of their own
  config.model.gan_label_smoothing = 0.0       # one-sided: D's target for real images is 1 - this
  config.model.gan_r1_gamma = 1.0              # R1 penalty weight on D's gradient at real images
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "latent_dim")
  base.check_widths(config, "channels", 2, 2)
  base.check_widths(config, "generator_channels", 2, 2)
  base.check(0 <= config.model.gan_ema_decay < 1,
             f"--gan_ema_decay must be in [0, 1), got {config.model.gan_ema_decay}")
  base.check(0 <= config.model.gan_d_learning_rate <= 1,
             f"--gan_d_learning_rate must be in [0, 1] (0: --learning_rate), got "
             f"{config.model.gan_d_learning_rate}")
  base.check(0 <= config.model.gan_label_smoothing < 0.5,
             f"--gan_label_smoothing must be in [0, 0.5), got {config.model.gan_label_smoothing}")
  base.check(config.model.gan_hidden >= 0,
             f"--gan_hidden must be >= 0 (0: none), got {config.model.gan_hidden}")
  base.check(config.model.gan_r1_gamma >= 0,
             f"--gan_r1_gamma must be >= 0, got {config.model.gan_r1_gamma}")
