"""In-process A/B of a family's train step with nets.Conv's 'taps' choice off (TAPS_RATIO = 0) and
on (2, the default): both steps compiled in one process, then timed alternately, 6 runs of STEPS
steps each from the same initial state (the chunk runner of training, the family's own loop and
compiler options); img/s median (min-max).

  .venv/bin/python experiments/results/conv_taps_2026-11-28/taps_step_ab.py conv_vae 50
"""
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import configs, cpu_compiler, data, parallel, trainer
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import nets

name = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
train = data.load("mnist", "train")
config = configs.get_config(name)
family, model, stage1 = trainer.build(config)
mesh = parallel.make_mesh(config.num_devices)
tx, state0 = trainer.initial_state(family, model, config, len(train[0]) // config.batch_size, stage1)
step = family.training.step(model, tx, config)
inputs = np.asarray(family.training.train_inputs(model, config, state0.variables(), *train))
state0, images, labels = parallel.put((state0, inputs, train[1]), parallel.replicated(mesh))
batches = parallel.put(np.asarray(train_lib.epoch_batches(
    jax.random.PRNGKey(0), 0, len(images), config.batch_size)), parallel.batch_sharding(mesh, 2, axis=1))
fresh_state = lambda: jax.block_until_ready(jax.tree.map(jnp.copy, state0))  # The runner donates.
runs, losses = {}, {}
for ratio in (0, 2):
  nets.TAPS_RATIO = ratio  # Read while the step is traced, i.e. on the runner's first call.
  runs[ratio] = train_lib.make_chunk_runner(model, tx, step, mesh, loop=config.train_loop,
                                            compiler_options=cpu_compiler.of_config(config))
  _, metrics = runs[ratio](fresh_state(), images, labels, batches, 0, steps)
  losses[ratio] = float(jnp.mean(metrics["loss"]))
print(f"mean loss over {steps} steps:", losses)
if losses[0] == losses[2]:  # Other float rounding must show in the losses if the programs differ.
  sys.exit(f"{name}: the same program both times (a trace cached inside the family's step "
           "outlived the first one): compare two processes instead (experiments.benchmark)")
rates = {0: [], 2: []}
for rep in range(6):
  for ratio in ((0, 2) if rep % 2 == 0 else (2, 0)):
    state = fresh_state()
    start = time.perf_counter()
    jax.block_until_ready(runs[ratio](state, images, labels, batches, 0, steps)[1])
    rates[ratio].append(steps * config.batch_size / (time.perf_counter() - start))
print(name, config.train_loop, {f"TAPS_RATIO={r}": f"{statistics.median(v):,.0f} img/s "
                                f"({min(v):,.0f}-{max(v):,.0f})" for r, v in rates.items()})
