"""The CPU speed choices of a run, read from its config in this one module: XLA:CPU's compiler
options (ynn_fusions), the convolution implementation (conv_taps_ratio, and 'patches' in a
scanned step: conv_choice / for_scanned_step) and the loop kind (train_loop, train.py). Each is
chosen per family by measurement; none changes the numbers beyond float rounding.

jaxlib 0.10's XLA:CPU hands dots, convolutions and the elementwise ops around them to YNNPACK
fusions. Without them (XLA's own, multi-threaded kernels) some families ran faster on 2 CPU
cores, others slower (docs/performance.md): a family's config says which with `ynn_fusions`, and
its train step, sampler, reconstructions and IWAE bound are compiled accordingly (jax.jit's
compiler_options: per computation, nothing process-wide). The evaluation classifier's features
(metrics.features) always compile without them (faster). Numbers differ by float rounding only.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import platform

import jax

YNN_FUSIONS_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
# The option is experimental and may go in another release, so it is passed only to the jaxlib it
# was measured with (XLA rejects an option it does not know).
MEASURED_JAXLIB = ("0.10.",)


def cpu_info() -> tuple[str, str]:
  """(model name, instruction-set family XLA:CPU compiles for: 'avx512', 'avx2' or the machine
  name) of this host, from /proc/cpuinfo where there is one."""
  name, flags = "", []
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and not name:
          name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = line.split()
  except OSError:
    pass
  kind = next((k.rstrip("f") for k in ("avx512f", "avx2") if k in flags), platform.machine())
  return name or platform.processor() or "CPU", kind


@dataclasses.dataclass(frozen=True)
class ConvChoice:
  """How Conv(impl='auto') computes: speed only, every choice gives the same numbers up to
  float32 rounding. A family's top module holds one in its `conv_choice` field, made from the
  run's config when the model is built (conv_choice below); every Conv inside reads it from
  there (nets.nearest_conv_choice)."""
  taps_ratio: float = 2.0       # 'taps' where kernel**2 * features <= taps_ratio * in_channels
  scanned_step: bool = False    # the module is traced as the step of a scanned training loop


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
  """compiler_options of a run's config (its config.run.ynn_fusions)."""
  return compiler_options(bool(config.run.ynn_fusions))


def conv_choice(config) -> ConvChoice:
  """The ConvChoice a family's build puts in its top module (config.run.conv_taps_ratio)."""
  return ConvChoice(taps_ratio=float(config.run.conv_taps_ratio))


def for_scanned_step(model, loop: str):
  """The module the training step traces: for loop='scan', model with its ConvChoice's
  scanned_step set (convolution gradients as patches, nets.auto_conv_impl); else model itself.
  Parameters are the same either way: only how the convolutions compute differs."""
  choice = getattr(model, "conv_choice", None)
  if loop != "scan" or choice is None:
    return model
  return model.clone(conv_choice=dataclasses.replace(choice, scanned_step=True))
