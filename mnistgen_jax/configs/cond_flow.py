"""`cond_flow`: class-conditional flow matching in pixel space, with classifier-free guidance."""
from mnistgen_jax import configs
from mnistgen_jax.configs import flow

PRESETS = flow.PRESETS
validate = flow.validate


def get_config(preset: str = ""):
  config = flow.get_config()
  config.model = "cond_flow"
  return configs.with_preset(config, preset)
