"""The run driver: data, state, resume, the scanned epochs, progress, checkpoints, final outputs."""
from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import checkpoint, configs, cpu_compiler, data, files, models, parallel, report, runs
from mnistgen_jax import train as train_lib


class MetricsLog:
  """Appends JSON lines to workdir/metrics.jsonl and the scalars to TensorBoard event files
  (tensorboardX) in workdir/tensorboard; on resume, drops what lies past the restored step.

  In memory it keeps only what the curves need: every test record, and the train records
  thinned to at most `curve_points` (all of a short run; every 2^j-th step of a long one). The
  file keeps every step. Why: the IWAE paper's schedule is 9.8 M steps at batch 20, whose records
  held in memory would take about 10 GB."""

  def __init__(self, workdir: str, resume_step: int, write: bool = True,
               curve_points: int = 20_000):
    self.tensorboard = None
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writes, self.curve_points = write, curve_points
    self.train, self.test, self.stride, self._train_seconds = [], [], 1, 0.0

    def kept_lines():  # Streamed: the file of a long run does not fit in memory as records.
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except ValueError:
            continue  # A line cut by a crash.
          if record["step"] <= resume_step:
            self._keep(record)
            yield line if line.endswith("\n") else line + "\n"

    if os.path.exists(self.path):
      if self.writes:  # Atomically: never a cut file.
        def rewrite(tmp):
          with open(tmp, "w") as f:
            f.writelines(kept_lines())
        files.write_atomically(self.path, rewrite)
      else:
        for _ in kept_lines():  # Another host writes the file; this one only reads the curve.
          pass
    if self.writes:
      from tensorboardX import SummaryWriter  # purge_step hides events of a run's lost steps.
      self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                       purge_step=resume_step + 1)

  def _keep(self, record: dict) -> None:
    self._train_seconds = max(self._train_seconds, record.get("train_seconds", 0.0))
    if record["split"] != "train":
      self.test.append(record)
      return
    if record["step"] % self.stride:
      return
    self.train.append(record)
    if len(self.train) > self.curve_points:  # Every other kept step: the stride doubles.
      self.stride *= 2
      self.train = [r for r in self.train if r["step"] % self.stride == 0]

  @property
  def records(self) -> list:
    """The kept records (thinned train steps, then every test record), for the curves."""
    return self.train + self.test

  def write(self, records) -> None:
    for r in records:
      self._keep(r)
    if not self.writes:
      return
    with open(self.path, "a") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    for r in records:
      for k, v in r.items():
        if k not in ("step", "epoch", "split") and isinstance(v, float):
          self.tensorboard.add_scalar(f"{r['split']}/{k}", v, r["step"])

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()

  def train_seconds(self) -> float:
    return self._train_seconds


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss); the workdir keeps its last good checkpoint."""


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped training after a chunk, whose step was saved as a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


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


def load_data(config):
  kw = dict(source=config.data_source, data_dir=config.data_dir or None)
  train = data.load(config.dataset, "train", limit=config.train_size or None, **kw)
  test = data.load(config.dataset, "test", limit=config.test_size or None, **kw)
  if len(train[0]) < config.batch_size:
    raise ValueError(f"--batch_size={config.batch_size} is larger than the {len(train[0]):,} "
                     f"training images of {config.dataset}: pass a smaller --batch_size")
  if config.binarize == "dynamic":  # Training images are drawn afresh at each step instead.
    test = (data.binarized(test[0]), test[1])
  return train, test


def initial_state(family, model, config, total_steps: int, stage1=None):
  """(optimizer for total_steps, fresh state) as the family's Training makes them: its
  optimizer, its initial variables (pretrained stage 1, EMA copies)."""
  training = family.training
  tx = training.optimizer(config, total_steps)
  init_variables = functools.partial(training.init_variables, config, stage1=stage1)
  image_shape = data.info(config.dataset).image_shape
  return tx, train_lib.init_state(model, tx, config.seed, image_shape, init_variables)


def load_stage1(config, family) -> models.Stage1 | None:
  """The trained run a multi-stage family builds on (config.stage1_workdir), checked: it exists,
  is of a family this one accepts, of the same dataset, and finished (its last checkpoint is the
  end of its epochs)."""
  if not family.stage1_families:
    return None
  accepted = " or ".join(f"--model={n}" for n in family.stage1_families)
  workdir = config.stage1_workdir
  if not workdir:
    raise ValueError(f"--model={config.model} needs --stage1_workdir=<a finished run of "
                     f"{accepted}>")
  try:
    saved = runs.read_config(workdir)
  except checkpoint.CheckpointError as e:
    raise ValueError(f"--stage1_workdir: {e}") from e
  if saved is None:
    raise ValueError(f"--stage1_workdir={workdir} holds no run (no config.json); train one with "
                     f"{accepted} there first")
  if saved["model"] not in family.stage1_families:
    raise ValueError(f"--stage1_workdir={workdir} holds a {saved['model']!r} run, which "
                     f"{config.model} cannot build on; train one with {accepted}")
  if saved.get("dataset") != config.dataset:
    raise ValueError(f"--stage1_workdir={workdir} was trained on {saved.get('dataset')!r}, this "
                     f"run is on {config.dataset!r}; pass --dataset={saved.get('dataset')} or "
                     "another stage-1 run")
  try:
    stage1_config, stage1_family, stage1_model, state = restore_run(workdir)
  except checkpoint.CheckpointError as e:
    raise ValueError(f"--stage1_workdir: {e}") from e
  del stage1_family
  # Finished: training wrote its results (eval.json) at the very step of the latest checkpoint,
  # after all of the run's configured epochs.
  results = report.read_eval_json(workdir)
  if (results.get("step") != int(state.step)
      or results.get("epochs") != stage1_config.num_epochs):
    raise ValueError(f"--stage1_workdir={workdir} holds an unfinished run (its latest checkpoint, "
                     f"step {int(state.step)}, is not the end of its {stage1_config.num_epochs} "
                     f"epochs); finish it first: mnistgen-train --workdir={workdir} resumes it")
  return models.Stage1(workdir, stage1_config, stage1_model, state.variables())


def build(config):
  """(family, module, stage1) of a config; a multi-stage family gets its stage-1 run loaded."""
  family = models.get(config.model)
  stage1 = load_stage1(config, family)
  return family, family.build(config, stage1), stage1


def _saved_config(workdir: str):
  """The validated config of workdir's config.json; None where it holds no run yet."""
  saved = runs.read_config(workdir)
  if saved is None:
    return None
  try:
    return configs.from_saved(saved)
  except ValueError as e:
    raise checkpoint.CheckpointError(f"{runs.config_path(workdir)} is not a valid config ({e}); "
                                     "pass another --workdir") from e


def check_workdir(workdir: str, config) -> None:
  """Raises CheckpointError if workdir holds a run of another model or config."""
  saved = _saved_config(workdir)
  if saved is None:
    return
  runs.check_same_run(workdir, json.loads(saved.to_json()), json.loads(config.to_json()),
                      configs.RESUMABLE_FIELDS)
  # A schedule that depends on the total would differ from a straight run of the new length.
  if config.lr_schedule == "cosine" and config.num_epochs != saved.num_epochs:
    raise checkpoint.CheckpointError(
        f"{workdir} was trained with --lr_schedule={config.lr_schedule} over "
        f"--num_epochs={saved.num_epochs}, which sets the rate of every step; resuming with "
        f"--num_epochs={config.num_epochs} would match no straight run: pass "
        f"--num_epochs={saved.num_epochs}, or train the longer run in another --workdir")


def check_not_past_the_end(workdir: str, step: int, total_steps: int, steps_per_epoch: int,
                           num_epochs: int) -> None:
  """A run resumed with fewer epochs than it has trained would describe its checkpoint wrongly."""
  if step > total_steps:
    done = -(-step // steps_per_epoch)
    raise checkpoint.CheckpointError(
        f"{workdir} has already trained {step} steps ({done} epochs), more than "
        f"--num_epochs={num_epochs}: pass --num_epochs={done} (or more) to resume it, "
        "mnistgen-evaluate to evaluate it, or another --workdir")


def train_and_evaluate(config, workdir: str, print_fn=print, evaluate_fn=None) -> dict:
  """Trains (or resumes) config in workdir; writes checkpoints, metrics, pictures and eval.json.
  The workdir is locked meanwhile (runs.lock); SIGTERM / SIGINT save and raise Interrupted.

  evaluate_fn(config, model, variables) -> dict or None: an evaluation of the trained state in
  memory (e.g. metrics.evaluate.evaluate_variables), stored as eval.json's 'evaluation' block."""
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch(config.batch_size, mesh)
  family, model, stage1 = build(config)  # These refuse bad input before anything is written,
  datasets = load_data(config)           # the workdir and its lock included.
  run = functools.partial(_train_and_evaluate, config, workdir, mesh, family, model, stage1,
                          datasets, evaluate_fn=evaluate_fn)
  # Several hosts: all take part in every step; the first alone writes files, prints and locks.
  if jax.process_index() != 0:
    return run(primary=False, print_fn=lambda *args: None)
  with runs.lock(workdir):
    return run(primary=True, print_fn=print_fn)


def _train_and_evaluate(config, workdir: str, mesh, family, model, stage1, datasets, *,
                        primary: bool, print_fn, evaluate_fn) -> dict:
  check_workdir(workdir, config)  # Under the lock: no other run can write it meanwhile.
  (train_x, train_y), (test_x, test_y) = datasets
  steps_per_epoch = len(train_x) // config.batch_size
  total_steps = steps_per_epoch * config.num_epochs
  tx, state = initial_state(family, model, config, total_steps, stage1)
  del stage1  # Its variables now live in the state.
  training = family.training
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  log, stop = None, None
  try:  # Closed on every exit: an open manager's threads print tracebacks at exit.
    if ckpt.latest_step() is not None:
      state = ckpt.restore(state)
      check_not_past_the_end(workdir, int(state.step), total_steps, steps_per_epoch,
                             config.num_epochs)
      print_fn(f"resumed from {ckpt.directory} at step {int(state.step)}")
    # config.json belongs to checkpoints: written on resume (after a successful restore, so a
    # refused workdir keeps its own) or just before the first save, so a run that fails before any
    # checkpoint (a diverging learning rate, say) never locks the workdir to its settings.
    config_written = False
    if primary and ckpt.latest_step() is not None:
      runs.write_config(workdir, config)
      config_written = True

    step = int(state.step)
    log = MetricsLog(workdir, step, write=primary)
    keys = train_lib.root_keys(config.seed)
    run_chunk = train_lib.make_chunk_runner(
        model, tx, training.step(model, tx, config), mesh,
        binarize_key=keys["binarize"] if config.binarize == "dynamic" else None,
        loop=config.train_loop, compiler_options=cpu_compiler.of_config(config))
    fit_prior = training.fit_prior(model, config)
    snapshot = None
    if training.epoch_snapshots and primary:
      snapshot = report.EpochSnapshot(model, config, workdir)
    evaluate = train_lib.make_evaluator(model, config.eval_batch_size)
    # Data and state replicated on every device; each batch is split over them (parallel.py).
    state, train_x, train_y, test_x, test_y = parallel.put(
        (state, train_x, train_y, test_x, test_y), parallel.replicated(mesh))
    # Only for steps left to train; part of the training time (e.g. a frozen stage 1 encoding
    # the set once), counted below.
    start, train_inputs = time.perf_counter(), None
    if step < total_steps:
      train_inputs = jax.block_until_ready(parallel.put(
          training.train_inputs(model, config, state.variables(), train_x, train_y),
          parallel.replicated(mesh)))
    input_seconds = time.perf_counter() - start
    index_sharding = parallel.batch_sharding(mesh, ndim=2, axis=1)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print_fn(f"{config.model}: {num_params:,} parameters, {len(train_x):,} training images, "
             f"{steps_per_epoch} steps/epoch, {total_steps} steps, {mesh.size} "
             f"{mesh.devices.flat[0].platform.upper()} device(s)")

    chunk = train_lib.chunk_length(steps_per_epoch, config.log_every)
    train_seconds = log.train_seconds() + input_seconds
    rate, batches, batches_epoch, eval_metrics = None, None, -1, None
    stop = StopSignals()
    while step < total_steps:
      epoch, position = divmod(step, steps_per_epoch)
      if epoch != batches_epoch:
        batches = parallel.put(
            np.asarray(train_lib.epoch_batches(keys["data"], epoch, len(train_x), config.batch_size)),
            index_sharding)
        batches_epoch = epoch
      length = min(chunk, steps_per_epoch - position)
      if config.checkpoint_every_steps:
        length = min(length, config.checkpoint_every_steps - step % config.checkpoint_every_steps)
      start = time.perf_counter()
      state, metrics = run_chunk(state, train_inputs, train_y, batches, position, length)
      metrics = jax.device_get(metrics)
      seconds = time.perf_counter() - start
      train_seconds += seconds
      step += length
      log.write([{"step": step - length + i + 1, "epoch": epoch + 1, "split": "train",
                  "train_seconds": round(train_seconds, 3),
                  **{k: float(v[i]) for k, v in metrics.items()}} for i in range(length)])
      chunk_rate = length * config.batch_size / seconds
      rate = chunk_rate if rate is None else 0.7 * rate + 0.3 * chunk_rate  # first chunk compiles
      eta = (total_steps - step) * config.batch_size / rate
      terms = " ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in metrics.items())
      print_fn(f"step {step}/{total_steps} epoch {epoch + 1}/{config.num_epochs} | {terms} | "
               f"{chunk_rate:,.0f} img/s | ETA {_format_seconds(eta)}")
      bad = first_non_finite(metrics, step - length + 1)
      if bad:
        _stop(ckpt, f"the training loss term {bad[1]!r} is {bad[2]} at step {bad[0]}")

      end_of_epoch = step % steps_per_epoch == 0
      eval_metrics = None
      if end_of_epoch:
        eval_metrics = {k: float(v) for k, v in jax.device_get(
            evaluate(state.variables(), test_x, test_y, keys["eval"])).items()}
        bad = first_non_finite({k: [v] for k, v in eval_metrics.items()}, step)
        if bad:
          _stop(ckpt, f"the test loss term {bad[1]!r} is {bad[2]} after step {step}")
        record = {"step": step, "epoch": epoch + 1, "split": "test",
                  "train_seconds": round(train_seconds, 3), **eval_metrics}
        if snapshot is not None:
          record.update(snapshot(parallel.local_copy(state.variables()), epoch + 1))
        log.write([record])
        print_fn(f"epoch {epoch + 1} test: " + " ".join(
            f"{k} {v:.3f}" for k, v in record.items() if k in eval_metrics or k.endswith("entropy")))
      every = config.checkpoint_every_steps
      if end_of_epoch or (every and step % every == 0) or stop.signum is not None:
        if not _all_finite((state.params, state.model_state, state.opt_state)):
          _stop(ckpt, f"the model's parameters or state are not finite after step {step}")
        if fit_prior is not None:  # Every checkpoint can sample.
          fitted = fit_prior(state.variables(), train_x, train_y)
          state = state.replace(model_state=parallel.put(
              {k: v for k, v in fitted.items() if k != "params"}, parallel.replicated(mesh)))
        if primary and not config_written:
          runs.write_config(workdir, config)
          config_written = True
        ckpt.save(step, state, metrics=eval_metrics)
      if stop.signum is not None:
        raise Interrupted(f"{signal.Signals(stop.signum).name} received: stopped after step "
                          f"{step}/{total_steps} and saved it in {ckpt.directory}; run the same "
                          "command to resume from there", stop.signum)
  finally:
    if stop is not None:
      stop.restore()
    ckpt.close()
    if log is not None:
      log.close()

  final = eval_metrics  # The last epoch's evaluation, unless this run had nothing to train.
  if final is None:
    final = {k: float(v) for k, v in jax.device_get(
        evaluate(state.variables(), test_x, test_y, keys["eval"])).items()}
  result = {
      "model": config.model, "dataset": config.dataset, "step": step,
      "epochs": step / steps_per_epoch, "num_params": int(num_params),
      "train_seconds": round(train_seconds, 2), "loss_name": family.loss_name,
      "test": {(family.loss_name if k == "loss" else k): v for k, v in final.items()},
  }
  if primary:
    local = parallel.local_copy((state.variables(), test_x, test_y))
    report.write_outputs(family, model, local[0], config, workdir, local[1:], log.records, result)
    evaluation = evaluate_fn and evaluate_fn(config, model, local[0])
    if evaluation is not None:
      result["evaluation"] = {"step": step, **evaluation}
    report.update_eval_json(workdir, result)
  return result


def load_config(workdir: str):
  """The validated config of the run in workdir."""
  config = _saved_config(workdir)
  if config is None:
    raise checkpoint.CheckpointError(f"{workdir} holds no run (no config.json); pass a workdir "
                                     "written by experiments.train")
  return config


def restore_run(workdir: str, step: int | None = None, config=None):
  """(config, family, model, state) of the run in workdir, at its latest (or given) checkpoint.
  config: the run's config with resumable fields changed (e.g. temperature), else the saved one."""
  config = config or load_config(workdir)
  family, model, stage1 = build(config)
  # The state's structure, shapes and dtypes (the same for any number of steps) without computing
  # it: initialising eagerly ran ~90 small computations, 2.7 s of the conv VAE's evaluation.
  abstract = jax.eval_shape(lambda: initial_state(family, model, config, 0, stage1)[1])
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # Where an eager init put it.
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                        abstract)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  try:  # Closed on failure too: an open manager's threads print tracebacks at exit.
    if ckpt.latest_step() is None:
      raise checkpoint.CheckpointError(f"{workdir} holds no checkpoint yet; train it first")
    state = ckpt.restore(target, step)
  finally:
    ckpt.close()
  return config, family, model, state
