"""`ae`: the deterministic auto-encoder; samples through a Gaussian fitted to its codes."""
from mnistgen_jax import configs
from mnistgen_jax.configs import vae

PRESETS = {"1m": dict(hidden=(620,))}  # 0.999 M
validate = vae.validate


def get_config(preset: str = ""):
  config = vae.get_config()
  config.family = "ae"
  config.run.ynn_fusions = False  # XLA:CPU's own kernels: 1.4x the train step (docs/performance.md)
  del config.model["objective"], config.model["importance_samples"]  # no variational posterior
  return configs.with_preset(config, preset)
