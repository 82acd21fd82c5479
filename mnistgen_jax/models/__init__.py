"""Importing this package registers every model family."""
from mnistgen_jax.models import ae, dcgan, lenet, vae, vqvae, vqvae_prior  # noqa: F401  (registration side effects)
from mnistgen_jax.models.interface import Family, Stage1, Training, supports  # noqa: F401
from mnistgen_jax.models.registry import get, names, register  # noqa: F401
