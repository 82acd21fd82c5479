"""`hvae`: the IWAE paper's VAE with two stochastic layers (Burda et al. 2016), on dynamically
binarized MNIST. Defaults: their networks (784-200-200-100 and 100-100-50, tanh), batch 20, Adam
1e-3 with their 3^i-epoch schedule (3280 epochs in all: pass a smaller --num_epochs to run its
beginning); --objective=iwae --importance_samples=5 for their IWAE rows."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base, vae


def get_config(preset: str = ""):
  config = base.get_config("hvae")
  config.data.binarize = "dynamic"
  config.train.batch_size = 20
  config.run.ynn_fusions = False  # XLA:CPU's own kernels: 1.1-1.6x the train step (docs/performance.md)
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = "iwae"
  config.run.num_epochs = 3280
  config.model.hidden = (200, 200)       # x <-> z1
  config.model.hidden2 = (100, 100)      # z1 <-> z2
  config.model.latent_dims = (100, 50)   # z1, z2
  config.model.activation = "tanh"       # relu | tanh
  config.model.objective = "elbo"        # elbo | iwae
  config.model.importance_samples = 1    # k draws per image in the training loss
  return configs.with_preset(config, preset)


def validate(config):
  base.check_widths(config, "hidden")
  base.check_widths(config, "hidden2")
  base.check_widths(config, "latent_dims", 2, 2)
  base.check_choice(config, "activation", ("relu", "tanh"))
  vae.check_likelihood_fields(config)
