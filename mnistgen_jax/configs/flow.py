"""`flow`: flow matching in pixel space (U-Net velocity field; models/pixel_flow.py)."""
from mnistgen_jax import configs, data, flow
from mnistgen_jax.configs import base

# accelerator: the larger network for a GPU/TPU (minutes on one GPU), sampled with 32 Heun steps
# (where the sampling curve flattens: docs/families.md).
# Runs saved before --patch existed ran the U-Net on pixels.
ABSENT_IN_OLDER_RUNS = {"patch": 1}
PRESETS = {"1m": dict(channels=(32, 64, 52), patch=1, attention=True),  # 1.018 M (cond: 1.019 M)
           "accelerator": dict(channels=(64, 128, 128), patch=1, attention=True, num_epochs=30,
                               batch_size=256, sample_steps=32)}


def get_config(preset: str = ""):
  config = base.get_config("flow")
  # The CPU config: about an hour on 2 cores. The U-Net sees 2x2 pixel blocks (14x14x4)
  # and skips attention: 4x cheaper per step than the unpatched 32,64,64 with attention.
  config.run.num_epochs = 12
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = "cosine"
  config.model.channels = (32, 64)             # U-Net widths, one per resolution (here 14x14, 7x7)
  config.model.attention = False               # self-attention at the lowest resolution
  config.model.patch = 2                       # 1: the U-Net works on pixels (28x28, 14x14, 7x7)
  config.run.ynn_fusions = False  # XLA:CPU's own kernels: sampling 2x, training the same
                                  # (cond_flow inherits it)
  config.model.time_sampling = "logit_normal"  # uniform | logit_normal (more weight mid-path)
  config.model.label_dropout = 0.1             # cond_flow: share of labels dropped (for guidance)
  config.model.ema_decay = 0.999               # EMA of the weights used for sampling (0: none)
  config.sampling.solver = "heun"              # euler | heun: the ODE solver
  config.sampling.sample_steps = 16            # ODE steps
  config.sampling.guidance = 1.0               # classifier-free guidance scale, cond_flow
  return configs.with_preset(config, preset)


def check_flow_fields(config):
  """The checks of the fields every flow-matching family has (also configs/latent_flow.py)."""
  base.check_positive(config, "sample_steps")
  base.check_choice(config, "time_sampling", flow.TIME_SAMPLINGS)
  base.check_choice(config, "solver", flow.SOLVERS)
  base.check(0 <= config.model.label_dropout < 1,
             f"--label_dropout must be in [0, 1), got {config.model.label_dropout}")
  base.check(0 <= config.model.ema_decay < 1,
             f"--ema_decay must be in [0, 1), got {config.model.ema_decay}")
  base.check(config.sampling.guidance >= 0,
             f"--guidance must be >= 0, got {config.sampling.guidance}")


def validate(config):
  base.check_widths(config, "channels", 1, 4)
  base.check_choice(config, "patch", (1, 2))
  size = data.info(config.data.dataset).image_shape[0]
  halvings = len(config.model.channels) - 1
  base.check(
      size % (config.model.patch * 2**halvings) == 0,
      f"--channels={','.join(map(str, config.model.channels))} with --patch={config.model.patch}: "
      f"{size}x{size} images folded by {config.model.patch} cannot be halved {halvings} times; "
      "give fewer --channels (one per resolution) or --patch=1")
  check_flow_fields(config)
