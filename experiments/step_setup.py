"""A family's train step set up as the trainer sets it up before its epochs, for the scripts that
time it (experiments.benchmark, experiments.step_ab). No flags here: both define their own."""
from typing import Any, Callable, NamedTuple


class PreparedStep(NamedTuple):
  """A family's train step and what it reads, as the trainer prepares them before its epochs."""
  family: Any
  model: Any
  step: Any
  mesh: Any
  steps_per_epoch: int
  new_runner: Callable  # () -> a chunk runner of the family's loop and compiler options.
  state: Any            # The initial state, placed on the mesh.
  images: Any           # What the step reads, placed: a prior on a frozen stage 1 reads its
  labels: Any           # codes, every other family the images.
  batches: Any          # The first epoch's batch indices, sharded like training's.
  x: Any                # The first batch as a runner hands it to the step (uint8 images as
  y: Any                # floats), for cost analysis and tracing.


def prepare_step(config, train) -> PreparedStep:
  """PreparedStep of config on train (images, labels). Runners are made by new_runner, not here:
  each traces the step on its first call, so a trace-time switch set before that call counts."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mnistgen_jax import cpu_compiler, parallel, runs, train_setup
  from mnistgen_jax import train as train_lib

  family, model, stage1 = runs.build(config)
  mesh = parallel.make_mesh(config.num_devices)
  steps_per_epoch = len(train[0]) // config.batch_size
  tx, state = train_setup.initial_state(family, model, config, steps_per_epoch, stage1)
  step = family.training.step(model, tx, config)
  inputs = np.asarray(family.training.train_inputs(model, config, state.variables(), *train))
  x = jnp.asarray(inputs[:config.batch_size])
  state, images, labels = parallel.put((state, inputs, train[1]), parallel.replicated(mesh))
  batches = parallel.put(np.asarray(train_lib.epoch_batches(
      jax.random.PRNGKey(0), 0, len(images), config.batch_size)),
      parallel.batch_sharding(mesh, 2, axis=1))
  return PreparedStep(
      family, model, step, mesh, steps_per_epoch,
      lambda: train_lib.make_chunk_runner(model, tx, step, mesh, loop=config.train_loop,
                                          compiler_options=cpu_compiler.of_config(config)),
      state, images, labels, batches, train_lib.to_float(x) if x.dtype == jnp.uint8 else x,
      jnp.asarray(train[1][:config.batch_size]))
