"""`cond_dcgan`: the class-conditional DCGAN."""
from mnistgen_jax import configs
from mnistgen_jax.configs import dcgan

PRESETS = {"1m": dict(channels=(108, 216), generator_channels=(108, 54), gan_hidden=0,
                      batch_size=128)}  # 1.023 M
validate = dcgan.validate
ABSENT_IN_OLDER_RUNS = dcgan.ABSENT_IN_OLDER_RUNS


def get_config(preset: str = ""):
  config = dcgan.get_config()
  config.family = "cond_dcgan"
  return configs.with_preset(config, preset)
