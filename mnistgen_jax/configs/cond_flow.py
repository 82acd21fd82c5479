"""`cond_flow`: class-conditional flow matching in pixel space, with classifier-free guidance."""
from mnistgen_jax import configs
from mnistgen_jax.configs import flow

# Guidance 1.25 with the accelerator network: the digit is read as requested more often, at a
# slightly lower fid_lenet (its record: experiments/results/records/). The CPU config keeps 1.
PRESETS = {**flow.PRESETS, "accelerator": {**flow.PRESETS["accelerator"], "guidance": 1.25}}
validate = flow.validate
ABSENT_IN_OLDER_RUNS = flow.ABSENT_IN_OLDER_RUNS


def get_config(preset: str = ""):
  config = flow.get_config()
  config.family = "cond_flow"
  return configs.with_preset(config, preset)
