"""`conv_vae`: the convolutional VAE (the seed's CVAE): two stride-2 convs, a 256 dense layer."""
from mnistgen_jax import configs
from mnistgen_jax.configs import vae

PRESETS = {"1m": dict(hidden=(140,))}  # 0.998 M
validate = vae.validate


def get_config(preset: str = ""):
  config = vae.get_config()
  config.family, config.model.arch, config.model.hidden = "conv_vae", "conv", (256,)
  # Native convolutions in a Python loop of jitted steps: 1.7x the scanned patches on CPU
  # (docs/performance.md); cond_vae inherits it.
  config.run.train_loop = "steps"
  # XLA:CPU's own kernels, not YNNPACK fusions: 1.1-1.3x the train step, 1.5x the sampler and the
  # IWAE bound on 2 cores (docs/performance.md); cond_vae inherits it.
  config.run.ynn_fusions = False
  return configs.with_preset(config, preset)
