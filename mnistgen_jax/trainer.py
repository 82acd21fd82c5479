"""The training loop: resume, the chunked epochs, progress, test losses, checkpoints, outputs.

It trains only. Its set-up (data, state, step, runner) is train_setup's, the same the benchmark
times; every file of the workdir is written through runs.py; the evaluation of a trained run
(fid_lenet, IWAE, ...) is evaluation.py's, called by the train binary after this returns.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import configs, parallel, report, runs, train_setup
from mnistgen_jax.errors import Interrupted, UserError
from mnistgen_jax import train as train_lib


class TrainingError(UserError):
  """Training cannot go on (a non-finite loss); the workdir keeps its last good checkpoint."""


class StopSignals:
  """While installed, SIGTERM (preemption, SLURM, `kill`) and SIGINT (Ctrl-C) only record that they
  came: the loop finishes its chunk, saves a checkpoint and raises Interrupted. A second signal
  acts as it would have. Installed from the main thread only (Python delivers signals there), and
  not on several hosts: one host stopping alone would leave the others waiting in a collective."""

  def __init__(self):
    self.signum, self.previous = None, {}
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self.previous[sig] = signal.signal(sig, self._record)

  def _record(self, signum, frame):
    del frame
    self.signum = signum
    self.restore()

  def restore(self):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    self.previous = {}


def first_non_finite(metrics: dict, first_step: int):
  """(step, term, value) of the earliest non-finite entry of per-step metrics, else None."""
  names = sorted(metrics, key=lambda k: k == "loss")  # Its parts first: they say which term.
  values = np.stack([np.asarray(metrics[k], np.float64).reshape(-1) for k in names])
  bad = np.argwhere(~np.isfinite(values.T))  # (step index, term index), step-major order
  if not len(bad):
    return None
  i, j = bad[0]
  return first_step + int(i), names[j], float(values[j, i])


def _stop(ckpt, what: str):
  last = ckpt.latest_step()
  kept = (f"the latest checkpoint (step {last}) is the last good one and stays" if last is not None
          else "no checkpoint was written")
  raise TrainingError(f"{what}; training stopped and nothing after it was saved: {kept}; "
                      "try a lower --learning_rate")


_all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
    [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
     if jnp.issubdtype(x.dtype, jnp.inexact)])))


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def setup(config, num_examples: int, workdir: str | None = None) -> train_setup.Setup:
  """The set-up training runs (train_setup.prepare of the built family, its stage 1 loaded, from
  the run's workdir where it stores its own) on num_examples training examples, also what the
  benchmark and the A/B tool time."""
  family, model, stage1 = runs.build(config, workdir)
  return train_setup.prepare(config, family, model, num_examples, stage1)


def train_and_evaluate(config, workdir: str, print_fn=print, trust_unverified: bool = False,
                       allow_device_change: bool = False) -> dict:
  """Trains (or resumes) config in workdir; writes checkpoints, metrics, pictures and eval.json's
  training results (the test loss terms after the last epoch), and returns those results. The
  workdir is locked meanwhile (runs.lock); SIGTERM / SIGINT save and raise Interrupted.
  trust_unverified: resume from a checkpoint whose digests are missing (checkpoint.TRUST);
  allow_device_change: resume on another device count (runs.check_devices)."""
  # These refuse bad input before anything is written, the workdir and its lock included.
  datasets = train_setup.load_data(config)
  training = setup(config, len(datasets[0][0]), workdir)
  # Several hosts: all take part in every step; the first alone writes files, prints and locks.
  if jax.process_index() != 0:
    return _train(training, workdir, datasets, primary=False, print_fn=lambda *args: None,
                  trust_unverified=trust_unverified, allow_device_change=allow_device_change)
  with runs.lock(workdir):
    return _train(training, workdir, datasets, primary=True, print_fn=print_fn,
                  trust_unverified=trust_unverified, allow_device_change=allow_device_change)


def _train(training, workdir: str, datasets, *, primary: bool, print_fn,
           trust_unverified: bool, allow_device_change: bool) -> dict:
  config = training.config
  runs.check_workdir(workdir, config)  # Under the lock: no other run can write it meanwhile.
  ckpt = runs.open_checkpoints(workdir, config.run.keep_checkpoints, trust_unverified,
                               writer=True)
  loop = None
  try:  # Closed on every exit: an open manager's threads print tracebacks at exit.
    state = training.state
    dropped = ckpt.drop_cut_off_save() if primary else None
    if dropped is not None:
      print_fn(f"checkpoint {dropped} was cut off while it was saved (no digest): set aside, "
               "its steps are trained again")
    if ckpt.latest_step() is not None:
      runs.check_devices(workdir, training.mesh.size, allow_device_change)
      state = ckpt.restore(state)
      runs.check_not_past_the_end(workdir, int(state.step), training.total_steps,
                                  training.steps_per_epoch, config.run.num_epochs)
      print_fn(f"resumed from {ckpt.directory} at step {int(state.step)}")
      # config.json belongs to checkpoints: written on resume (after a successful restore, so a
      # refused workdir keeps its own) or just before the first save, so a run that fails before
      # any checkpoint (a diverging learning rate, say) never locks the workdir to its settings.
      if primary:
        runs.write_config(workdir, config, training.mesh.size)
    loop = Loop.start(training, workdir, ckpt, datasets, state, primary, print_fn)
    loop.run()
  finally:
    ckpt.close()
    if loop is not None:
      loop.close()
  return loop.results()


@dataclasses.dataclass
class Loop:
  """The epochs of one training process, from a fresh or restored state to total_steps."""
  setup: train_setup.Setup
  workdir: str
  ckpt: Any
  log: runs.MetricsLog
  primary: bool
  print_fn: Callable
  state: Any
  train: tuple            # (images, labels), placed
  test: tuple             # likewise
  train_inputs: Any       # what the step reads (None when nothing is left to train)
  run_chunk: Callable
  fit_prior: Callable | None
  snapshot: Any           # report.EpochSnapshot of a generator, or None
  evaluate: Callable      # the test loss terms (train.make_evaluator)
  train_seconds: float
  num_params: int
  config_written: bool
  stop: Any = None        # StopSignals while the epochs run
  eval_metrics: dict | None = None

  @classmethod
  def start(cls, setup, workdir, ckpt, datasets, state, primary, print_fn) -> "Loop":
    config, model, training = setup.config, setup.model, setup.family.training
    log = runs.MetricsLog(workdir, int(state.step), write=primary, print_fn=print_fn)
    snapshot = None
    if training.epoch_snapshots and primary:
      snapshot = report.EpochSnapshot(model, config, workdir)
    # Data and state replicated on every device; each batch is split over them (parallel.py).
    (train_x, train_y), (test_x, test_y) = datasets
    state, train_x, train_y, test_x, test_y = setup.place(
        (state, train_x, train_y, test_x, test_y))
    # Only for steps left to train; part of the training time (e.g. a frozen stage 1 encoding
    # the set once), counted below.
    start, train_inputs = time.perf_counter(), None
    if int(state.step) < setup.total_steps:
      train_inputs = setup.train_inputs(state, train_x, train_y)
    input_seconds = time.perf_counter() - start
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print_fn(f"{config.family}: {num_params:,} parameters, {len(train_x):,} training images, "
             f"{setup.steps_per_epoch} steps/epoch, {setup.total_steps} steps, {setup.mesh.size} "
             f"{setup.mesh.devices.flat[0].platform.upper()} device(s)")
    print_fn(configs.describe_changes(config) + f" (all of it: {runs.config_path(workdir)})")
    return cls(setup, workdir, ckpt, log, primary, print_fn, state, (train_x, train_y),
               (test_x, test_y), train_inputs, setup.new_runner(),
               training.fit_prior(model, config), snapshot,
               train_lib.make_evaluator(model, config.train.eval_batch_size),
               log.train_seconds() + input_seconds, int(num_params),
               config_written=ckpt.latest_step() is not None)

  def run(self) -> None:
    setup, config = self.setup, self.setup.config
    chunk = train_lib.chunk_length(setup.steps_per_epoch, config.run.log_every)
    rate, batches, batches_epoch = None, None, -1
    self.stop = StopSignals()
    step = int(self.state.step)
    while step < setup.total_steps:
      epoch, position = divmod(step, setup.steps_per_epoch)
      if epoch != batches_epoch:
        batches, batches_epoch = setup.epoch_batches(epoch), epoch
      length = min(chunk, setup.steps_per_epoch - position)
      if config.run.checkpoint_every_steps:
        length = min(length,
                     config.run.checkpoint_every_steps - step % config.run.checkpoint_every_steps)
      rate = self._chunk(batches, epoch, position, length, rate)
      step += length
      end_of_epoch = step % setup.steps_per_epoch == 0
      self.eval_metrics = self._test(epoch, step) if end_of_epoch else None
      every = config.run.checkpoint_every_steps
      if end_of_epoch or (every and step % every == 0) or self.stop.signum is not None:
        self._save(step)
      if self.stop.signum is not None:
        raise Interrupted(f"{signal.Signals(self.stop.signum).name} received: stopped after step "
                          f"{step}/{setup.total_steps} and saved it in {self.ckpt.directory}; run "
                          "the same command to resume from there", self.stop.signum)

  def _chunk(self, batches, epoch: int, position: int, length: int, rate):
    """Trains `length` steps from batch `position`; logs and prints them; returns the smoothed
    img/s (the first chunk compiles)."""
    setup, config = self.setup, self.setup.config
    start = time.perf_counter()
    self.state, metrics = self.run_chunk(self.state, self.train_inputs, self.train[1], batches,
                                         position, length)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - start
    self.train_seconds += seconds
    step = int(epoch * setup.steps_per_epoch + position + length)
    self.log.write([{"step": step - length + i + 1, "epoch": epoch + 1, "split": "train",
                     "train_seconds": round(self.train_seconds, 3),
                     **{k: float(v[i]) for k, v in metrics.items()}} for i in range(length)])
    chunk_rate = length * config.train.batch_size / seconds
    self.log.scalars(step, {"train/images_per_second": chunk_rate, **{
        f"train/{name}": train_lib.rate_at(rate, step - 1)  # the rate the last step used
        for name, rate in setup.family.training.learning_rates(config, setup.total_steps).items()}})
    rate = chunk_rate if rate is None else 0.7 * rate + 0.3 * chunk_rate
    eta = (setup.total_steps - step) * config.train.batch_size / rate
    terms = " ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in metrics.items())
    self.print_fn(f"step {step}/{setup.total_steps} epoch {epoch + 1}/{config.run.num_epochs} | "
                  f"{terms} | {chunk_rate:,.0f} img/s | ETA {_format_seconds(eta)}")
    bad = first_non_finite(metrics, step - length + 1)
    if bad:
      _stop(self.ckpt, f"the training loss term {bad[1]!r} is {bad[2]} at step {bad[0]}")
    return rate

  def _test_losses(self) -> dict:
    return {k: float(v) for k, v in jax.device_get(self.evaluate(
        self.state.variables(), *self.test, self.setup.keys["eval"])).items()}

  def _test(self, epoch: int, step: int) -> dict:
    """The test loss terms after an epoch (logged, printed), with the generator's snapshot."""
    eval_metrics = self._test_losses()
    bad = first_non_finite({k: [v] for k, v in eval_metrics.items()}, step)
    if bad:
      _stop(self.ckpt, f"the test loss term {bad[1]!r} is {bad[2]} after step {step}")
    record = {"step": step, "epoch": epoch + 1, "split": "test",
              "train_seconds": round(self.train_seconds, 3), **eval_metrics}
    if self.snapshot is not None:
      record.update(self.snapshot(parallel.local_copy(self.state.variables()), epoch + 1))
    self.log.write([record])
    self.print_fn(f"epoch {epoch + 1} test: " + " ".join(
        f"{k} {v:.3f}" for k, v in record.items() if k in eval_metrics or k.endswith("entropy")))
    return eval_metrics

  def _save(self, step: int) -> None:
    state = self.state
    if not _all_finite((state.params, state.model_state, state.opt_state)):
      _stop(self.ckpt, f"the model's parameters or state are not finite after step {step}")
    if self.fit_prior is not None:  # Every checkpoint can sample.
      fitted = self.fit_prior(state.variables(), *self.train)
      self.state = state.replace(model_state=self.setup.place(
          {k: v for k, v in fitted.items() if k != "params"}))
    if self.primary and not self.config_written:
      if self.setup.stage1 is not None:  # The prior decodes with what its own workdir stores.
        runs.write_stage1_config(self.workdir, self.setup.stage1)
      runs.write_config(self.workdir, self.setup.config, self.setup.mesh.size)
      self.config_written = True
    self.ckpt.save(step, self.state, metrics=self.eval_metrics)

  def close(self) -> None:
    if self.stop is not None:
      self.stop.restore()
    self.log.close()

  def results(self) -> dict:
    """The run's training results (eval.json's top level) and, on the primary host, its
    pictures (report.write_outputs) and eval.json."""
    setup, config, family = self.setup, self.setup.config, self.setup.family
    step = int(self.state.step)
    final = self.eval_metrics  # The last epoch's test losses, unless nothing was trained.
    if final is None:
      final = self._test_losses()
    result = {
        "model": config.family, "dataset": config.data.dataset, "step": step,
        "epochs": step / setup.steps_per_epoch, "num_params": self.num_params,
        "train_seconds": round(self.train_seconds, 2), "loss_name": family.loss_name,
        "test": {(family.loss_name if k == "loss" else k): v for k, v in final.items()},
    }
    if self.primary:
      variables, test_x, test_y = parallel.local_copy((self.state.variables(), *self.test))
      report.write_outputs(family, setup.model, variables, config, self.workdir,
                           (test_x, test_y), self.log.records, result)
      runs.update_eval_json(self.workdir, result)
    return result
