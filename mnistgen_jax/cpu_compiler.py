"""XLA:CPU compiler options of a family's computations, chosen per family by measurement.

jaxlib 0.10's XLA:CPU hands dots, convolutions and the elementwise ops around them to YNNPACK
fusions. Without them (XLA's own, multi-threaded kernels) some families ran faster on 2 cores of
an AMD EPYC, others slower (README, Speed): a family's config says which with `ynn_fusions`, and
its train step, sampler, reconstructions and IWAE bound are compiled accordingly (jax.jit's
compiler_options: per computation, nothing process-wide). The evaluation classifier's features
(metrics.features) always compile without them (2.6x faster). Numbers differ by float rounding only.
"""
from __future__ import annotations

import importlib.metadata

import jax

YNN_FUSIONS_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
# The option is experimental and may go in another release, so it is passed only to the jaxlib it
# was measured with (XLA rejects an option it does not know).
MEASURED_JAXLIB = ("0.10.",)


def jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def compiler_options(ynn_fusions: bool = True, backend: str | None = None,
                     jaxlib: str | None = None) -> dict | None:
  """jax.jit's compiler_options: None (XLA's defaults) unless ynn_fusions is False on a CPU
  backend with a jaxlib the option was measured with."""
  backend = backend or jax.default_backend()
  jaxlib = jaxlib_version() if jaxlib is None else jaxlib
  if ynn_fusions or backend != "cpu" or not jaxlib.startswith(MEASURED_JAXLIB):
    return None
  return dict(YNN_FUSIONS_OFF)


def of_config(config) -> dict | None:
  """compiler_options of a run's config (its `ynn_fusions` field; XLA's defaults if it has none)."""
  return compiler_options(bool(config.get("ynn_fusions", True)))
