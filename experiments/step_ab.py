r"""In-process A/B of one of nets' trace-time switches (a module constant such as TAPS_RATIO) in a
family's train step: one chunk runner compiled per value in one process (the family's own loop and
compiler options, real MNIST), then timed alternately, --repeats runs of --steps steps each from
the same initial state; img/s median (min-max), and the median of each repeat's ratio to the first
value. Alternating in one process keeps machine drift out of the comparison.

  python -m experiments.step_ab --family=conv_vae --switch=TAPS_RATIO --values=0,2
"""
import ast
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import step_setup
from mnistgen_jax import configs, data
from mnistgen_jax.models import nets

FLAGS = flags.FLAGS
flags.DEFINE_string("family", "conv_vae", "family whose default config is timed")
flags.DEFINE_integer("steps", 50, "train steps per timed run")
flags.DEFINE_integer("repeats", 6, "timed runs per value")
flags.DEFINE_string("switch", "TAPS_RATIO",
                    "module constant of mnistgen_jax.models.nets read while the step is traced")
flags.DEFINE_list("values", ["0", "2"], "Python literals to set it to, A first")


def main(_):
  if not FLAGS.switch.isupper() or not hasattr(nets, FLAGS.switch):
    sys.exit(f"--switch={FLAGS.switch}: not a module constant of mnistgen_jax.models.nets "
             "(e.g. TAPS_RATIO)")
  try:
    values = [ast.literal_eval(v) for v in FLAGS.values]
  except (ValueError, SyntaxError):
    sys.exit(f"--values={','.join(FLAGS.values)}: each must be a Python literal, e.g. 0,2")
  train = data.load("mnist", "train")
  config = configs.get_config(FLAGS.family)
  prepared = step_setup.prepare_step(config, train)
  state0, images, labels, batches = prepared.state, prepared.images, prepared.labels, prepared.batches
  fresh_state = lambda: jax.block_until_ready(jax.tree.map(jnp.copy, state0))  # Runners donate.
  runs, losses, programs = [], [], []
  for value in values:
    setattr(nets, FLAGS.switch, value)  # Read while the step is traced: on the runner's 1st call.
    runs.append(prepared.new_runner())
    _, metrics = runs[-1](fresh_state(), images, labels, batches, 0, FLAGS.steps)
    losses.append(float(jnp.mean(metrics["loss"])))
    # A new lambda: make_jaxpr reuses the trace it made of the same function object.
    programs.append(str(jax.make_jaxpr(lambda *a: prepared.step(*a))(state0, prepared.x, prepared.y)))
  print(f"mean loss over {FLAGS.steps} steps:", dict(zip(FLAGS.values, losses)))
  if len(set(programs)) < len(programs):
    sys.exit(f"{FLAGS.family}: the same program for two values of {FLAGS.switch} (the switch does "
             "not reach this family's step, or a trace cached inside the step outlived the "
             "first one): compare two processes instead (experiments.benchmark)")
  rates = [[] for _ in values]
  for rep in range(FLAGS.repeats):
    order = range(len(values)) if rep % 2 == 0 else reversed(range(len(values)))
    for i in order:
      state = fresh_state()
      start = time.perf_counter()
      jax.block_until_ready(runs[i](state, images, labels, batches, 0, FLAGS.steps)[1])
      rates[i].append(FLAGS.steps * config.batch_size / (time.perf_counter() - start))
  print(FLAGS.family, config.train_loop, {
      f"{FLAGS.switch}={v}": f"{statistics.median(r):,.0f} img/s ({min(r):,.0f}-{max(r):,.0f})"
      for v, r in zip(FLAGS.values, rates)})
  for v, r in zip(FLAGS.values[1:], rates[1:]):  # Paired by repeat: drift hits both alike.
    ratios = [b / a for a, b in zip(rates[0], r)]
    print(f"  {FLAGS.switch}={v} / {FLAGS.values[0]}, per repeat: median {statistics.median(ratios):.3f}"
          f" ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
  app.run(main)
