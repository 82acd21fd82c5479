"""One training set-up for every caller: the trainer, the benchmark and the A/B tool.

From a config and a built family (models/, its stage 1 loaded by runs.py) it makes what a step
needs: the data, the optimizer and the fresh state (the family's Training decides both), the
run's keys, the step function and its chunk runner (the family's loop and compiler options,
dynamic binarization included), what the step reads for each example, and each epoch's batches,
placed on the device mesh. Nothing here reads or writes a workdir.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from mnistgen_jax import cpu_compiler, data, parallel
from mnistgen_jax import train as train_lib


def load_data(config):
  """((train images, labels), (test images, labels)) of the config's dataset, as uint8 arrays;
  binarize='dynamic' binarizes the test set once (training draws its bits at every step)."""
  kw = dict(source=config.run.data_source, data_dir=config.run.data_dir or None)
  train = data.load(config.data.dataset, "train", limit=config.data.train_size or None, **kw)
  test = data.load(config.data.dataset, "test", limit=config.data.test_size or None, **kw)
  if len(train[0]) < config.train.batch_size:
    raise ValueError(f"--batch_size={config.train.batch_size} is larger than the {len(train[0]):,} "
                     f"training images of {config.data.dataset}: pass a smaller --batch_size")
  if config.data.binarize == "dynamic":
    test = (data.binarized(test[0]), test[1])
  return train, test


def initial_state(family, model, config, total_steps: int, stage1=None):
  """(optimizer for total_steps, fresh state) as the family's Training makes them: its
  optimizer, its initial variables (pretrained stage 1, EMA copies)."""
  training = family.training
  tx = training.optimizer(config, total_steps)
  init_variables = functools.partial(training.init_variables, config, stage1=stage1)
  image_shape = data.info(config.data.dataset).image_shape
  return tx, train_lib.init_state(model, tx, config.train.seed, image_shape, init_variables)


@dataclasses.dataclass
class Setup:
  """A family's training as every caller runs it (see the module docstring)."""
  config: Any
  family: Any
  model: Any                 # family.build(config, stage1): evaluation, pictures, inputs
  step_model: Any            # the same parameters as the step traces them (for_scanned_step)
  mesh: Any
  tx: Any
  state: Any                 # The fresh state (unplaced); the trainer may restore over it.
  keys: dict                 # train.root_keys(config.train.seed)
  step: Callable             # (state, x, y) -> (state, metrics), the family's pure step
  num_examples: int          # training examples
  steps_per_epoch: int
  total_steps: int
  stage1: Any = None         # the models.Stage1 a multi-stage family trains on

  def new_runner(self) -> Callable:
    """A chunk runner of the step (train.make_chunk_runner): the family's loop, its compiler
    options and, with binarize='dynamic', the per-step Bernoulli draw. Each new runner traces
    the step anew on its first call."""
    config = self.config
    return train_lib.make_chunk_runner(
        self.step_model, self.tx, self.step, self.mesh,
        binarize_key=self.keys["binarize"] if config.data.binarize == "dynamic" else None,
        loop=config.run.train_loop, compiler_options=cpu_compiler.of_config(config))

  def place(self, tree):
    """tree replicated on every device of the mesh (data, state: each batch is split later)."""
    return parallel.put(tree, parallel.replicated(self.mesh))

  def train_inputs(self, state, images, labels):
    """What the step reads for each training example (the family's Training.train_inputs: the
    images, or a frozen stage 1's codes), placed and computed before returning."""
    return jax.block_until_ready(self.place(self.family.training.train_inputs(
        self.model, self.config, state.variables(), images, labels)))

  def placed_inputs(self, images, labels):
    """(fresh state, train inputs, labels, first epoch's batches), placed: what a runner reads
    when training starts (the benchmark and the A/B tool time it from there)."""
    state, images, labels = self.place((self.state, images, labels))
    return state, self.train_inputs(state, images, labels), labels, self.epoch_batches(0)

  def first_batch(self, inputs, labels, batches):
    """The first batch (x, y) as a runner hands it to the step (uint8 images as floats; the
    binarization's draw aside), for tracing and cost analysis."""
    idx = np.asarray(batches[0])
    x = np.asarray(inputs)[idx]
    return (train_lib.to_float(x) if x.dtype == np.uint8 else x), np.asarray(labels)[idx]

  def epoch_batches(self, epoch: int):
    """(steps_per_epoch, batch_size) example indices of an epoch, sharded as the runner reads."""
    indices = train_lib.epoch_batches(self.keys["data"], epoch, self.num_examples,
                                      self.config.train.batch_size)
    return parallel.put(np.asarray(indices), parallel.batch_sharding(self.mesh, ndim=2, axis=1))


def prepare(config, family, model, num_examples: int, stage1=None, mesh=None) -> Setup:
  """The Setup of `model` (family.build(config, stage1)) on num_examples training examples;
  mesh: parallel.make_mesh(config.run.num_devices) unless given."""
  mesh = mesh if mesh is not None else parallel.make_mesh(config.run.num_devices)
  parallel.check_batch(config.train.batch_size, mesh)
  steps_per_epoch = num_examples // config.train.batch_size
  total_steps = steps_per_epoch * config.run.num_epochs
  tx, state = initial_state(family, model, config, total_steps, stage1)
  # The step's own view of the module: how its convolutions compute in a scanned loop (speed).
  step_model = cpu_compiler.for_scanned_step(model, config.run.train_loop)
  return Setup(config, family, model, step_model, mesh, tx, state,
               train_lib.root_keys(config.train.seed), family.training.step(step_model, tx, config),
               num_examples, steps_per_epoch, total_steps, stage1)
