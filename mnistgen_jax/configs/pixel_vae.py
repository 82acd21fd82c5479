"""`pixel_vae`: the conv VAE's encoder with a PixelCNN decoder (models/pixel_vae.py), on dynamically
binarized MNIST: the likelihood model of docs/likelihoods.md that goes below
the IWAE paper's rows. The default is the CPU network (3 gated layers of 32); `accelerator` is the
GPU/TPU one (6 gated layers of 64)."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base, vae

# Runs saved before the KL warm-up existed weighed the KL fully from the first step.
ABSENT_IN_OLDER_RUNS = {"kl_warmup_steps": 0}
PRESETS = {"accelerator": dict(channels=(64, 128), hidden=(512,), latent_dim=32,
                               pixel_channels=64, pixel_layers=6, batch_size=128, num_epochs=60,
                               kl_warmup_steps=5000, train_loop="scan")}


def get_config(preset: str = ""):
  config = vae.get_config()
  config.family = "pixel_vae"
  config.model.arch = "conv"  # encoder, and the network from z to the PixelCNN's features
  config.model.hidden = (256,)
  config.model.latent_dim = 16
  config.data.binarize = "dynamic"       # a model of binary pixels: train on fresh Bernoulli draws
  config.run.num_epochs = 20
  config.train.lr_schedule = "cosine"
  config.model.pixel_channels = 32       # PixelCNN width (and of the feature map decoded from z)
  config.model.pixel_layers = 3          # gated residual 3x3 masked layers after the first 7x7 one
  config.model.pixel_kernel = 7          # the first (type-A) masked layer's kernel, odd
  config.model.kl_warmup_steps = 2000    # > 0: the KL's weight rises linearly to 1 over these steps
                                 # (ELBO, one sample): against posterior collapse
  config.run.train_loop = "steps"  # convolutions: a Python loop of jitted steps (docs/performance.md)
  # XLA's own CPU kernels, not YNNPACK fusions: 1.2-1.4x the train step, 1.7x the pixel-by-pixel
  # sampler on 2 cores (docs/performance.md); no effect on GPU/TPU.
  config.run.ynn_fusions = False
  return configs.with_preset(config, preset)


def validate(config):
  vae.validate(config)
  base.check_positive(config, "pixel_channels", "pixel_layers")
  base.check(int(config.model.kl_warmup_steps) >= 0,
             f"--kl_warmup_steps must be >= 0, got {config.model.kl_warmup_steps}")
  base.check(not config.model.kl_warmup_steps or (config.model.objective == "elbo"
                                            and config.model.importance_samples == 1),
             "--kl_warmup_steps weighs the one-sample ELBO's KL term: use it with "
             "--objective=elbo --importance_samples=1, or set --kl_warmup_steps=0")
  base.check(config.model.pixel_kernel >= 3 and config.model.pixel_kernel % 2 == 1,
             f"--pixel_kernel must be an odd integer >= 3, got {config.model.pixel_kernel}")
