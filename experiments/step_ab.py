r"""In-process A/B of one config field (a speed choice such as conv_taps_ratio, train_loop or
ynn_fusions) in a family's train step: the trainer's set-up (train_setup.prepare, real MNIST) and
one chunk runner per value in one process, then timed alternately, --repeats runs of --steps
steps each from the same initial state; img/s median (min-max), and the median of each repeat's
ratio to the first value. Alternating in one process keeps machine drift out of the comparison.

  python -m experiments.step_ab --family=conv_vae --field=conv_taps_ratio --values=0,2
"""
import ast
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from mnistgen_jax import configs, data, trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("family", "conv_vae", "family whose default config is timed")
flags.DEFINE_integer("steps", 50, "train steps per timed run")
flags.DEFINE_integer("repeats", 6, "timed runs per value")
flags.DEFINE_string("field", "conv_taps_ratio", "the config field compared (speed choices only: "
                    "the step must compute the same numbers)")
flags.DEFINE_list("values", ["0", "2"], "its values, A first (Python literals or strings)")


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A string field's value, e.g. scan.


def main(_):
  values = [_value(v) for v in FLAGS.values]
  train = data.load("mnist", "train")
  try:
    setups = [trainer.setup(configs.get_config(FLAGS.family, **{FLAGS.field: value}),
                            len(train[0])) for value in values]
  except ValueError as e:
    sys.exit(f"error: {e}")
  prepared = [setup.placed_inputs(*train) for setup in setups]
  runners, losses, programs = [setup.new_runner() for setup in setups], [], []
  fresh = lambda state: jax.block_until_ready(jax.tree.map(jnp.copy, state))  # Runners donate.
  for setup, runner, (state, images, labels, batches) in zip(setups, runners, prepared):
    _, metrics = runner(fresh(state), images, labels, batches, 0, FLAGS.steps)
    losses.append(float(jnp.mean(metrics["loss"])))
    x, y = setup.first_batch(images, labels, batches)
    programs.append(str(jax.make_jaxpr(setup.step)(state, x, y)))
  print(f"mean loss over {FLAGS.steps} steps:", dict(zip(FLAGS.values, losses)))
  loops = {setup.config.run.train_loop for setup in setups}
  if len(set(programs)) < len(programs) and len(loops) == 1:
    sys.exit(f"{FLAGS.family}: the same step program for two values of --{FLAGS.field} (the "
             "field does not reach this family's step): nothing to compare")
  rates = [[] for _ in values]
  batch_size = setups[0].config.train.batch_size
  for rep in range(FLAGS.repeats):
    order = range(len(values)) if rep % 2 == 0 else reversed(range(len(values)))
    for i in order:
      state, images, labels, batches = prepared[i]
      state = fresh(state)
      start = time.perf_counter()
      jax.block_until_ready(runners[i](state, images, labels, batches, 0, FLAGS.steps)[1])
      rates[i].append(FLAGS.steps * batch_size / (time.perf_counter() - start))
  print(FLAGS.family, {
      f"{FLAGS.field}={v}": f"{statistics.median(r):,.0f} img/s ({min(r):,.0f}-{max(r):,.0f})"
      for v, r in zip(FLAGS.values, rates)})
  for v, r in zip(FLAGS.values[1:], rates[1:]):  # Paired by repeat: drift hits both alike.
    ratios = [b / a for a, b in zip(rates[0], r)]
    print(f"  {FLAGS.field}={v} / {FLAGS.values[0]}, per repeat: median "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
  app.run(main)
