"""mnistgen_jax: latent representations and generative models of MNIST in JAX/Flax.

`mnistgen_jax.load_run(workdir)` gives a trained run as an object (mnistgen_jax/api.py); the
binaries are in mnistgen_jax/cli/.
"""


def __getattr__(name):
  # Imported on first use: `import mnistgen_jax.data` (and every binary's --help) stays free of
  # the model and evaluation imports the API needs.
  if name in ("load_run", "Run"):
    from mnistgen_jax import api
    return getattr(api, name)
  raise AttributeError(f"module 'mnistgen_jax' has no attribute {name!r}")
