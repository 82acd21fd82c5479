"""`latent_flow`: a flow-matching prior over a trained encoder family's codes (stage 2)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base
from mnistgen_jax.configs import flow as flow_fields

# 1m: a small prior (0.13 M) on top of its stage 1, which is the 1 M run of its own family.
PRESETS = {"1m": dict(prior_width=96, prior_layers=2)}


def get_config(preset: str = ""):
  config = base.get_config("latent_flow")
  config.stage1_workdir = ""      # a finished run of ae, vae, conv_vae or cond_vae (or their 1m)
  # Quality grows with the prior's compute whatever the shape (README); 192 x 40 epochs is the
  # most that trains in under 2 minutes on 2 AVX2 cores.
  config.num_epochs = 40
  config.batch_size = 512         # large batches: the regression targets are noisy
  config.learning_rate = 2e-3
  config.lr_schedule = "cosine"
  config.prior_width = 192        # velocity MLP width
  config.prior_layers = 3         # its residual blocks
  config.code_whitening = "diagonal"  # diagonal | full: codes standardised, or whitened
  config.time_sampling = "logit_normal"  # uniform | logit_normal (more weight mid-path)
  config.label_dropout = 0.1      # conditional stage 1: share of labels dropped (for guidance)
  config.ema_decay = 0.999        # EMA of the velocity weights used for sampling (0: none)
  config.solver = "heun"          # euler | heun (may change on resume / in generate, evaluate)
  config.sample_steps = 25        # ODE steps (likewise)
  config.guidance = 1.0           # classifier-free guidance scale, conditional stage 1 (likewise)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "prior_width", "prior_layers")
  base.check_choice(config, "code_whitening", ("diagonal", "full"))
  flow_fields.check_flow_fields(config)
