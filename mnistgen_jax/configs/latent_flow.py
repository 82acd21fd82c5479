"""`latent_flow`: a flow-matching prior over a trained encoder family's codes (stage 2)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base
from mnistgen_jax.configs import flow as flow_fields

# 1m: a small prior (0.15 M with its guide) on top of its stage 1, the 1 M run of its own family.
# grid: the CPU recipe over a spatial_vae's 7x7 code grid (both stages, about 9 minutes on 2
# cores; docs/families.md): stage 1 trained first into <workdir>/stage1, a wider MLP prior (the
# grid's codes flattened) with a wider guide, extrapolated less (1.5: the best FID measured).
# grid_accelerator: the same shape at accelerator scale (more stage-1 epochs, a larger, longer
# trained prior).
_GRID = dict(stage1="spatial_vae", prior_network="mlp", prior_width=384, prior_layers=3,
             guide_width=64, guide_layers=1, num_epochs=30, autoguidance=1.5)
PRESETS = {"1m": dict(prior_width=96, prior_layers=2),
           "grid": _GRID,
           "grid_accelerator": {**_GRID, "stage1_args": "num_epochs=20 channels=64,128",
                                "prior_width": 1024, "prior_layers": 4, "guide_width": 128,
                                "num_epochs": 100}}
# Runs saved before autoguidance existed have no guide network in their checkpoints.
# Runs saved before grid codes and conditional priors existed: flat codes, standardised per
# dimension, conditional exactly when stage 1 is.
ABSENT_IN_OLDER_RUNS = {"guide_width": 0, "guide_layers": 1, "autoguidance": 1.0,
                        "stage1": "", "stage1_args": "", "conditional": False, "prior_channels": (64,),
                        "prior_attention": True, "prior_network": "auto"}


def get_config(preset: str = ""):
  config = base.get_config("latent_flow")
  config.model.stage1_workdir = ""  # a finished run of spatial_vae, ae, vae, conv_vae or cond_vae
  config.model.stage1 = ""          # or a stage-1 family, trained first into <workdir>/stage1
  config.model.stage1_args = ""     # --stage1's fields, as 'FIELD=VALUE ...' (else its defaults)
  config.model.conditional = False  # class-conditional prior (always over a conditional stage 1)
  # Quality grows with the prior's compute whatever the shape: 30 epochs of width 192 with the
  # guide train in about two minutes on 2 CPU cores; autoguidance more than makes up for more.
  config.run.num_epochs = 30
  config.train.batch_size = 512                # large batches: the regression targets are noisy
  config.train.learning_rate = 2e-3
  config.train.lr_schedule = "cosine"
  # The velocity network: mlp (a residual MLP over the codes, grid codes flattened) | unet (the
  # pixel flows' U-Net over grid codes) | auto (the U-Net for grid codes, the MLP for flat ones).
  # On 2 CPU cores the MLP over a 7x7 grid's codes reaches a far lower FID in a third of the
  # U-Net's time (docs/families.md).
  config.model.prior_network = "mlp"
  config.model.prior_width = 192               # the MLP: its width
  config.model.prior_layers = 3                # the MLP: its residual blocks
  config.model.prior_channels = (64,)          # grid codes: the U-Net's widths per resolution
  config.model.prior_attention = True          # grid codes: self-attention at its lowest one
  config.model.code_whitening = "auto"  # auto | diagonal | channel | global | full: codes
                                        # standardised per dimension, per grid channel, by one
                                        # scale, or whitened (auto: global for grid codes,
                                        # else diagonal)
  config.model.time_sampling = "logit_normal"  # uniform | logit_normal (more weight mid-path)
  config.model.label_dropout = 0.1  # conditional prior: share of labels dropped (guidance)
  config.model.ema_decay = 0.999  # EMA of the velocity weights used for sampling (0: none)
  # Autoguidance (docs/families.md): a small guide velocity network trained beside the prior; samples
  # follow v_guide + autoguidance (v_prior - v_guide). 0 / 1: no guide network / unguided.
  config.model.guide_width = 32          # guide width (32 x 1 costs ~8 % of the step, 64 x 1 ~20 %)
  config.model.guide_layers = 1          # guide residual blocks
  config.sampling.solver = "heun"        # euler | heun: the ODE solver
  config.sampling.sample_steps = 25      # ODE steps
  config.sampling.guidance = 1.0         # classifier-free guidance scale, conditional prior
  config.sampling.autoguidance = 2.0     # samples extrapolated away from the guide (1: the prior)
  return configs.with_preset(config, preset)


def validate(config):
  base.check_positive(config, "prior_width", "prior_layers", "guide_layers")
  base.check(config.model.guide_width >= 0,
             f"--guide_width must be >= 0, got {config.model.guide_width}")
  base.check(config.sampling.autoguidance >= 0,
             f"--autoguidance must be >= 0, got {config.sampling.autoguidance}")
  base.check(
      config.model.guide_width > 0 or config.sampling.autoguidance == 1.0,
      f"--autoguidance={config.sampling.autoguidance} needs a guide network, which this run has "
      "not (--guide_width=0); pass --autoguidance=1, or train with --guide_width > 0")
  base.check_choice(config, "prior_network", ("auto", "mlp", "unet"))
  base.check_choice(config, "code_whitening", ("auto", "diagonal", "channel", "global", "full"))
  base.check_widths(config, "prior_channels", 1, 3)
  base.check(not (config.model.stage1 and config.model.stage1_workdir),
             f"--stage1={config.model.stage1} trains stage 1 into <workdir>/stage1, "
             f"--stage1_workdir={config.model.stage1_workdir} reuses a finished one: pass one")
  base.check(config.model.stage1 or not config.model.stage1_args,
             "--stage1_args sets the fields of the stage 1 that --stage1=FAMILY trains: pass "
             "--stage1 too")
  base.check(config.model.stage1 in ("",) + tuple(configs.names()),
             f"--stage1={config.model.stage1!r} is not a family; choose one of the families this "
             "prior builds on (mnistgen-train --model=latent_flow --help)")
  flow_fields.check_flow_fields(config)
