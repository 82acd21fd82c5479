"""Importing this package registers every model family."""
from mnistgen_jax.models import ae, dcgan, lenet, vae, vqvae, vqvae_prior  # noqa: F401  (registration side effects)
from mnistgen_jax.models.registry import Family, get, names, register  # noqa: F401
