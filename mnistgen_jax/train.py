"""One training loop for every family: a pure jitted step over device-resident batches, run as a
lax.scan of steps or as a Python loop of jitted steps (config.run.train_loop: the faster, measured).

The whole run is a function of the config: parameters from fold_in(seed, 0), per-step randomness
from fold_in(state.rng, step), and each epoch's shuffle from fold_in(data key, epoch). So the
position in the data is the step alone, and a restored checkpoint resumes bit-for-bit.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from mnistgen_jax import parallel


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray         # int32 scalar: optimisation steps done
  params: Any
  opt_state: Any
  model_state: Any          # non-trainable variable collections, e.g. {'prior': ...}
  rng: jnp.ndarray          # key for per-step randomness

  def variables(self):
    return {"params": self.params, **self.model_state}


TRAIN_LOOPS = ("scan", "steps")

def root_keys(seed: int):
  root = jax.random.PRNGKey(seed)
  return {name: jax.random.fold_in(root, i)
          for i, name in enumerate(("init", "train", "data", "eval", "sample", "binarize"))}


def iwae_schedule(learning_rate: float, steps_per_epoch: int, stages: int = 8):
  """Burda et al. 2016's schedule: stage i = 0..7 lasts 3^i epochs at learning_rate * 10^(-i/7)
  (3280 epochs in all); the last rate holds after that. Epoch-based, so it does not depend on
  num_epochs: a shorter run is the schedule's beginning."""
  ends = np.cumsum([3**i for i in range(stages)])[:-1]  # 1, 4, 13, ..., 1093 epochs
  return optax.piecewise_constant_schedule(
      learning_rate, {int(e) * steps_per_epoch: 10 ** (-1 / 7) for e in ends})


def learning_rate(config, total_steps: int):
  """Adam's learning rate: config.train.learning_rate, or a schedule of the step (optax) for
  lr_schedule 'cosine' (to 0 over total_steps) and 'iwae' (iwae_schedule)."""
  if config.train.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.train.learning_rate, max(total_steps, 1))
  if config.train.lr_schedule == "iwae":
    return iwae_schedule(config.train.learning_rate, max(total_steps // config.run.num_epochs, 1))
  return config.train.learning_rate


def rate_at(rate, step: int) -> float:
  """A learning rate (a number or a schedule) at `step`."""
  return float(rate(step)) if callable(rate) else float(rate)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
  """Adam at learning_rate(config, total_steps)."""
  return optax.adam(learning_rate(config, total_steps))


def to_float(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 pixels -> float32 in [0, 1]; done inside the step so the data stays uint8 on device."""
  return images.astype(jnp.float32) / 255.0


def init_state(model, tx, seed: int, image_shape, init_variables: Callable | None = None
               ) -> TrainState:
  """Fresh state; init_variables(variables) -> variables may replace some (pretrained parts)."""
  keys = root_keys(seed)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  y = jnp.zeros((1,), jnp.int32)
  variables = dict(model.init({"params": keys["init"], "sample": keys["sample"]}, x, y,
                              method="losses"))
  if init_variables is not None:
    variables = dict(init_variables(variables))
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=variables, rng=keys["train"])


def make_train_step(model, tx, method: str = "losses",
                    objective: Callable | None = None) -> Callable:
  """(state, x float in [0,1], y) -> (state, metrics): one step on the batch mean loss.
  method: the module's per-example loss method (x, y, train) -> dict with 'loss'; a family whose
  step reads precomputed inputs (Training.train_inputs) names the method that takes those.
  objective: None (minimise the mean 'loss'), or (batch means of the terms, step) -> the scalar
  minimised instead, e.g. a KL weight warming up over the first steps; metrics stay the terms."""

  def loss_fn(params, state, x, y, key):
    # Non-trainable collections (codebook EMAs, ...) may be updated by the training pass.
    losses, model_state = model.apply(
        {"params": params, **state.model_state}, x, y, train=True, method=method,
        rngs={"sample": key}, mutable=list(state.model_state))
    means = {k: v.mean() for k, v in losses.items()}
    minimised = means["loss"] if objective is None else objective(means, state.step)
    return minimised, (means, model_state)

  def step(state: TrainState, x, y):
    key = jax.random.fold_in(state.rng, state.step)
    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(
        state.params, state, x, y, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=dict(model_state)), metrics

  return step


def with_average(variables: dict, name: str) -> dict:
  """variables plus an 'ema' collection whose `name` entry starts as a copy of params[name]."""
  average = jax.tree.map(jnp.copy, variables["params"][name])
  return {**variables, "ema": {**variables.get("ema", {}), name: average}}


def update_average(state: TrainState, name: str, decay: float) -> TrainState:
  """Moves model_state['ema'][name] toward params[name]: an exponential moving average of the
  weights (sampled with instead of the last ones). Warm-up as tf.train.ExponentialMovingAverage
  with num_updates: early weights, far from trained, are forgotten fast instead of lingering for
  ~1 / (1 - decay) steps."""
  rate = jnp.minimum(decay, (1.0 + state.step) / (10.0 + state.step))
  averages = state.model_state["ema"]
  average = optax.incremental_update(state.params[name], averages[name], 1.0 - rate)
  return state.replace(model_state={**state.model_state, "ema": {**averages, name: average}})


def make_chunk_runner(model, tx, step: Callable | None = None, mesh=None,
                      binarize_key=None, loop: str = "scan",
                      compiler_options: dict | None = None) -> Callable:
  """run(state, inputs, labels, batch_indices, start, length) -> (state, metrics stacked over the
  steps): `length` consecutive steps of an epoch from batch `start`.
  step: (state, x, y) -> (state, metrics); default make_train_step(model, tx). x: rows of the
  training inputs, uint8 images made float in [0, 1], or a family's float inputs as they are.
  mesh: a parallel.make_mesh mesh; each batch is split over its devices (data parallel).
  binarize_key: images become a Bernoulli draw of their pixels (dynamic binarization), drawn
  from this key and the step number, so a resumed run draws the same bits.
  loop: 'scan' runs the chunk as one jitted lax.scan (no per-step dispatch: best for small steps);
  'steps' calls one jitted step per batch (~0.1 ms of dispatch each; the native convolution's
  gradients stay fast outside a loop on CPU). Both give the same numbers up to float rounding.
  compiler_options: jax.jit's, e.g. cpu_compiler.of_config(config) (speed only)."""
  if loop not in TRAIN_LOOPS:
    raise ValueError(f"loop must be one of {TRAIN_LOOPS}, got {loop!r}")
  step = step or make_train_step(model, tx)

  def inputs_of(state, x):
    if x.dtype != jnp.uint8:
      return x
    x = to_float(x)
    if binarize_key is not None:
      key = jax.random.fold_in(binarize_key, state.step)
      x = jax.random.bernoulli(key, x).astype(x.dtype)
    return x

  def split(batch):
    if mesh is None:
      return batch
    return lax.with_sharding_constraint(batch, parallel.batch_sharding(mesh, batch.ndim))

  def batch_step(state, inputs, labels, idx):
    x = split(inputs[idx])
    return step(state, inputs_of(state, x), split(labels[idx]))

  if loop == "steps":
    @functools.partial(jax.jit, donate_argnums=0, compiler_options=compiler_options)
    def one_step(state, inputs, labels, batch_indices, position):
      return batch_step(state, inputs, labels, batch_indices[position])

    def run_steps(state, inputs, labels, batch_indices, start, length):
      metrics = []
      for position in range(start, start + length):
        state, m = one_step(state, inputs, labels, batch_indices, position)
        metrics.append(m)
      return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)

    return run_steps

  @functools.partial(jax.jit, static_argnames="length", donate_argnums=0,
                     compiler_options=compiler_options)
  def run(state, inputs, labels, batch_indices, start, length):
    chunk = lax.dynamic_slice_in_dim(batch_indices, start, length)
    return lax.scan(lambda state, idx: batch_step(state, inputs, labels, idx), state, chunk)

  return run


def chunk_length(steps_per_epoch: int, log_every: int) -> int:
  """Steps per scanned chunk: the largest divisor of the epoch not above log_every (one chunk
  shape, so one compilation), unless that is under half of log_every (then log_every itself)."""
  target = min(log_every, steps_per_epoch)
  divisor = max(d for d in range(1, target + 1) if steps_per_epoch % d == 0)
  return divisor if 2 * divisor >= target else target


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size"))
def epoch_batches(data_key, epoch, num_examples: int, batch_size: int) -> jnp.ndarray:
  """(steps_per_epoch, batch_size) example indices; the incomplete last batch is dropped."""
  steps = num_examples // batch_size
  perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
  return perm[: steps * batch_size].reshape(steps, batch_size)


def map_batches(fn: Callable, images, labels, batch_size: int):
  """Applies fn(x_float, y, batch_index) over the data in batches (lax.map); returns the
  concatenated per-example outputs for the N real examples (the last batch is padded)."""
  n = images.shape[0]
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xs = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
  ys = jnp.pad(labels, (0, pad))
  xs = xs.reshape(num_batches, batch_size, *images.shape[1:])
  ys = ys.reshape(num_batches, batch_size)
  out = lax.map(lambda a: fn(to_float(a[0]), a[1], a[2]), (xs, ys, jnp.arange(num_batches)))
  return jax.tree.map(lambda v: v.reshape(num_batches * batch_size, *v.shape[2:])[:n], out)


def make_evaluator(model, batch_size: int) -> Callable:
  """(variables, images, labels, key) -> mean of each per-example loss term over the set."""

  @jax.jit
  def evaluate(variables, images, labels, key):
    def losses(x, y, i):
      return model.apply(variables, x, y, method="losses",
                         rngs={"sample": jax.random.fold_in(key, i)})
    per_example = map_batches(losses, images, labels, batch_size)
    return {k: v.mean() for k, v in per_example.items()}

  return evaluate


def make_applier(model, method: str, batch_size: int) -> Callable:
  """Jitted batched model.apply(method) over a whole dataset: encode / reconstruct."""

  @jax.jit
  def apply(variables, images, labels):
    return map_batches(lambda x, y, i: model.apply(variables, x, y, method=method),
                       images, labels, batch_size)

  return apply
