"""`vae`: the MLP VAE, pytorch/examples recipe (784-400-20). conv_vae and cond_vae start here."""
from mnistgen_jax import configs
from mnistgen_jax.configs import base

# 1m: widths for about 1 M trained parameters (mnistgen-budget --preset=1m).
# iwae_1layer: Burda et al. 2016's one-stochastic-layer networks (784-200-200-50, tanh) on
# dynamically binarized MNIST, batch 20, their 3^i-epoch schedule over 3280 epochs; add
# --objective=iwae --importance_samples=5 for their IWAE rows.
PRESETS = {"1m": dict(hidden=(615,)),  # 1.003 M
           "iwae_1layer": dict(hidden=(200, 200), latent_dim=50, activation="tanh",
                               binarize="dynamic", batch_size=20, learning_rate=1e-3,
                               lr_schedule="iwae", num_epochs=3280)}


def get_config(preset: str = ""):
  config = base.get_config("vae")
  config.model.arch = "mlp"              # mlp | conv
  config.model.latent_dim = 20           # latent dimension (2 draws latent.png directly)
  config.model.hidden = (400,)           # dense widths after the (optional) conv stack
  config.model.channels = (32, 64)       # conv widths, each a stride-2 layer (arch=conv)
  config.model.activation = "relu"       # relu | tanh, of every hidden layer
  config.model.objective = "elbo"        # elbo | iwae (Burda et al. 2016), over importance_samples
  config.model.importance_samples = 1    # k draws of z per image in the training loss
  return configs.with_preset(config, preset)


def check_likelihood_fields(config):
  """The variational fields shared with configs/hvae.py (the auto-encoder has none)."""
  base.check_choice(config, "objective", ("elbo", "iwae"))
  base.check_positive(config, "importance_samples")


def validate(config):
  base.check_choice(config, "arch", ("mlp", "conv"))
  base.check_positive(config, "latent_dim")
  base.check_choice(config, "activation", ("relu", "tanh"))
  if "objective" in config.model:  # not the auto-encoder's (configs/ae.py)
    check_likelihood_fields(config)
  base.check_widths(config, "hidden")
  base.check_widths(config, "channels", 1, 2)
