"""`python experiments/latent_space.py ...` or `python -m experiments.latent_space ...`: the binary
mnistgen_jax.cli.latent_space (console script `mnistgen-latent-space`), kept here for the commands that name it."""
import os
import sys

if __package__ in (None, ""):  # Run as a file: the checkout's package, not an installed copy.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mnistgen_jax.cli.latent_space import run  # noqa: E402

if __name__ == "__main__":
  run()
