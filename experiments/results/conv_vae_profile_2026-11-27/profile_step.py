"""Where one train step of a family's default config (batch 128, `--train_loop=steps`) spends its
time on this machine: the step's median wall time, then a jax.profiler trace of 10 steps summed
per XLA thunk (ms per step, top 40) and in three groups.

  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 .venv/bin/python \
      experiments/results/conv_vae_profile_2026-11-27/profile_step.py [FAMILY, default conv_vae] [config]

With a second argument `config` the step compiles with the family's own compiler options
(cpu_compiler.of_config: no YNN fusions for the conv VAE, its config says); without it,
with XLA's defaults, as for the 2026-11-27 profile.txt.
"""
import collections
import glob
import gzip
import json
import sys
import tempfile

import jax
import jax.numpy as jnp

from mnistgen_jax.cli.benchmark import median_seconds
from mnistgen_jax import configs, cpu_compiler, data, trainer
from mnistgen_jax import train as train_lib

TRACED_STEPS = 10


def group(thunk: str) -> str:
  if thunk.startswith(("ynn_fusion", "convolution", "conv_general_dilated", "dot")):
    return "conv/matmul (ynn_fusion, convolution, dot)"
  if "transpose" in thunk or "copy" in thunk:
    return "transposes/copies (depth_to_space, layouts)"
  return "elementwise + reductions"


def main():
  name = sys.argv[1] if len(sys.argv) > 1 else "conv_vae"
  config = configs.get_config(name, train_loop="steps")
  images, labels = data.load("mnist", "train")[:2]
  setup = trainer.setup(config, len(images))
  state = setup.state
  options = cpu_compiler.of_config(config) if sys.argv[2:] == ["config"] else None
  step = jax.jit(setup.step, compiler_options=options)
  x = train_lib.to_float(jnp.asarray(images[:config.train.batch_size]))
  y = jnp.asarray(labels[:config.train.batch_size])

  def run(steps):
    nonlocal state
    for _ in range(steps):
      state, metrics = step(state, x, y)
    jax.block_until_ready(metrics)

  run(3)  # Compilation.
  print("step ms", 1e3 * median_seconds(lambda: run(1), 20))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      run(TRACED_STEPS)
    trace, = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    with gzip.open(trace) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  micros, calls = collections.Counter(), collections.Counter()
  for e in events:
    micros[e["name"]] += e["dur"]
    calls[e["name"]] += 1
  for thunk, us in micros.most_common(40):
    print(f"{us / TRACED_STEPS / 1e3:8.2f} ms/step  x{calls[thunk] // TRACED_STEPS:3d}  {thunk[:110]}")
  groups = collections.Counter()
  for thunk, us in micros.items():
    if not thunk.startswith(("ThunkExecutor", "$")):  # Wrappers around the thunks, Python frames.
      groups[group(thunk)] += us
  for name_, us in groups.items():
    print(f"CAT {us / TRACED_STEPS / 1e3:7.2f} ms/step  {name_}")


if __name__ == "__main__":
  main()
