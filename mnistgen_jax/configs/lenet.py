"""`lenet`: the evaluation classifier whose features define fid_lenet (mnistgen-train-classifier)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base


def get_config(preset: str = ""):
  config = base.get_config("lenet")
  config.run.num_epochs, config.train.learning_rate, config.train.lr_schedule = 12, 2e-3, "cosine"
  return configs.with_preset(config, preset)
