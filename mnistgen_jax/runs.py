"""A run's workdir, and the one module that reads and writes it.

Every file of a workdir goes through here: its lock, config.json (written with the first
checkpoint, checked on resume), the checkpoints and their digests (checkpoint.Checkpointer),
metrics.jsonl and its TensorBoard twin (MetricsLog), eval.json, and the stage-1 run a
multi-stage family builds on. The trainer, the evaluation and the binaries read runs only here.

`lock(workdir)` makes one process own a workdir while it trains there: an OS file lock (flock) on
workdir/.lock, which dies with its process, so a killed run never leaves a stale lock behind.

`workdir/config.json` records what the checkpoints were trained with; a later run in the same
workdir must match it (except the resumable fields), so a checkpoint is never restored into, or
overwritten by, another model or config.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

import jax

from mnistgen_jax import checkpoint, configs, models, train_setup
from mnistgen_jax.checkpoint import CheckpointError
from mnistgen_jax.errors import naming
from mnistgen_jax.files import strict_json, write_atomically


LOCK_FILE = ".lock"


@contextlib.contextmanager
def lock(workdir: str):
  """Holds workdir's exclusive lock (creating the folder); CheckpointError, naming the holder's
  PID and host, when another process holds it, and for a workdir that cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f"--workdir={workdir} is a file, not a folder; pass a folder")
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise CheckpointError(f"cannot write in --workdir={workdir} ({e.strerror}); pass a writable "
                          "folder") from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
      raise CheckpointError(f"{workdir} is in use by a run of {holder}; wait for it to end (or "
                            "stop it), or pass another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}".encode())
    yield
  finally:
    os.close(fd)  # Releases the lock.


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def read_config(workdir: str) -> dict | None:
  """The saved config.json as a dict; None for a workdir that holds no run yet."""
  path = config_path(workdir)
  if not os.path.exists(path):
    folder = os.path.join(workdir, "checkpoints")
    if os.path.isdir(folder) and os.listdir(folder):
      raise CheckpointError(f"{workdir} holds checkpoints but no config.json; pass another --workdir")
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); pass another --workdir") from e
  if configs.saved_family(saved) is None:
    raise CheckpointError(f"{path} names no model; pass another --workdir")
  return saved


def check_same_run(workdir: str, saved, current) -> None:
  """Raises CheckpointError if the saved config differs from current beyond the fields of the
  resumable sections (configs.RESUMABLE_SECTIONS)."""
  if saved.family != current.family:
    raise CheckpointError(f"{workdir} holds a {saved.family!r} run, not {current.family!r}; pass "
                          f"another --workdir or --model={saved.family}")
  saved_fields, current_fields = (configs.fields(json.loads(c.to_json())) for c in (saved, current))
  resumable = configs.resumable_fields(current)
  diffs = [f"{k}={saved_fields.get(k)!r} (now {v!r})" for k, v in sorted(current_fields.items())
           if k not in resumable and saved_fields.get(k) != v]
  if diffs:
    raise CheckpointError(f"{workdir} was trained with {', '.join(diffs)}; pass the same values "
                          "or another --workdir")


TRAINED_WITH = "trained_with.json"  # the fixed fields of the checkpoints, bound to config.json


def _fixed_fields(config) -> dict:
  """{name: value} of the fields a resumed run cannot change (all but RESUMABLE_SECTIONS'): the
  network, its training and data, which the checkpoints were made with; JSON values."""
  resumable = configs.resumable_fields(config)
  return {"family": config.family, **{k: v for k, v in configs.fields(json.loads(
      config.to_json())).items() if k not in resumable}}


def check_trained_with(workdir: str, config) -> None:
  """CheckpointError, in one line naming the fields, where config (config.json's) differs from
  the fields the checkpoints were trained with (trained_with.json, written with config.json by
  write_config): an edited config.json would build another network over the old weights.
  Fields one of them lacks (a run of an older layout) are not compared."""
  bound = _trained_with(workdir)
  if bound is None:
    return  # Written before this binding existed (or no checkpoint yet).
  now = _fixed_fields(config)
  diffs = [f"{k}={now[k]!r} (trained with {bound[k]!r})" for k in sorted(bound.keys() & now)
           if bound[k] != now[k]]
  if diffs:
    raise CheckpointError(f"{config_path(workdir)} differs from what its checkpoints were trained "
                          f"with: {', '.join(diffs)}; put those values back, or pass another "
                          "--workdir")


def _trained_with(workdir: str) -> dict | None:
  return _json_object(os.path.join(workdir, TRAINED_WITH),
                      "config.json cannot be checked against the checkpoints; pass another "
                      "--workdir")


def check_devices(workdir: str, devices: int, allow_change: bool = False) -> None:
  """CheckpointError (one line) for a resume on another number of devices than the run was
  trained on (trained_with.json): the batch would be split and its gradients summed in another
  order, so the run would not be bit-identical to a straight one. allow_change: resume anyway
  (--allow_device_change)."""
  trained = (_trained_with(workdir) or {}).get("devices")
  if trained is None or trained == devices or allow_change:
    return
  raise CheckpointError(
      f"{workdir} was trained on {trained} device(s), and this run has {devices}: resumed, it "
      "would not be bit-identical to a straight run (the gradients are summed in another order); "
      f"pass --num_devices={trained} where this machine has that many, --allow_device_change to "
      "resume anyway, or another --workdir")


def write_config(workdir: str, config, devices: int | None = None) -> None:
  """config.json, and with its first writing trained_with.json (check_trained_with; with the
  number of devices the run trains on, check_devices)."""
  os.makedirs(workdir, exist_ok=True)
  bound = os.path.join(workdir, TRAINED_WITH)
  if not os.path.exists(bound):
    write_json(bound, {**_fixed_fields(config), "devices": devices})
  path, text = config_path(workdir), config.to_json(indent=2)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return  # Unchanged (a resumed run): leave the file, and the folder, untouched.
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  write_atomically(path, write)  # Never a half-written config.


def open_checkpoints(workdir: str, keep: int, trust_unverified: bool = False,
                     writer: bool = False) -> checkpoint.Checkpointer:
  """The workdir's checkpoints (the last `keep` and the best by test loss, with digests checked
  before each restore unless trust_unverified: --trust_unverified_checkpoint). writer: training,
  under the run's lock (it clears what killed saves left)."""
  return checkpoint.Checkpointer(workdir, keep, trust_unverified=trust_unverified, writer=writer)


def write_json(path: str, obj) -> None:
  """obj as indented, strict JSON at path (numbers that are not finite as null), atomically."""
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(strict_json(obj), f, indent=2, allow_nan=False)
  write_atomically(path, write)


def eval_json_path(workdir: str) -> str:
  return os.path.join(workdir, "eval.json")


def read_eval_json(workdir: str) -> dict:
  """workdir/eval.json ({} where there is none, or it is unreadable)."""
  try:
    with open(eval_json_path(workdir)) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return {}
  return saved if isinstance(saved, dict) else {}


def _json_object(path: str, fix: str) -> dict | None:
  """The JSON object in the run file at path (None where there is none); CheckpointError, in one
  line ending with `fix`, where it cannot be read or holds something else."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} cannot be read ({str(e)[:120]}); {fix}") from e
  if not isinstance(saved, dict):
    raise CheckpointError(f"{path} holds a JSON {type(saved).__name__}, not an object; {fix}")
  return saved


def saved_eval_json(workdir: str) -> dict:
  """workdir/eval.json as written ({} where there is none); CheckpointError, in one line, where
  it is not a JSON object: it is never silently replaced (it may hold hours of evaluation)."""
  return _json_object(eval_json_path(workdir),
                      "move it away (it is not replaced), then run again") or {}


def update_eval_json(workdir: str, blocks: dict) -> str:
  """The one writer of workdir/eval.json: merges `blocks` into what it holds (a training run's
  results never drop an earlier 'evaluation', and an evaluation keeps the training results),
  and lists under evaluation.stale the parts of the evaluation older than the latest checkpoint."""
  saved = saved_eval_json(workdir)
  saved.update(blocks)
  evaluation, latest = saved.get("evaluation"), latest_checkpoint_step(workdir)
  if isinstance(evaluation, dict) and isinstance(evaluation.get("part_steps"), dict):
    evaluation["stale"] = sorted(part for part, step in evaluation["part_steps"].items()
                                 if latest is not None and step < latest)
  write_json(eval_json_path(workdir), saved)
  return eval_json_path(workdir)


def evaluation_parts(evaluation: dict) -> list:
  """The parts of an evaluation block, each computed at one step: reconstructions, samples,
  calibration, and each IWAE bound iwae_nll_k<K> (with its _stderr)."""
  return [key for key in evaluation if key in ("reconstructions", "samples", "calibration")
          or key.startswith("iwae_nll_k") and not key.endswith("_stderr")]


def update_evaluation(workdir: str, evaluation: dict) -> str:
  """Merges an evaluation (at evaluation['step']) into eval.json's 'evaluation' block part by
  part: a part it computed replaces that part, the others stay, and part_steps says at which
  step each part was computed (a later --iwae_samples=0 keeps the IWAE bound, marked stale once
  a newer checkpoint exists). The caller holds the workdir's lock."""
  old = saved_eval_json(workdir).get("evaluation")
  old = dict(old) if isinstance(old, dict) else {}
  steps = {part: old.get("step") for part in evaluation_parts(old)}  # Blocks without part_steps.
  steps.update(old.get("part_steps") or {})
  new_parts = evaluation_parts(evaluation)
  if any(part.startswith("iwae_nll_k") for part in new_parts):
    old.pop("iwae_images", None)  # Of the bounds replaced.
  if "calibration" in new_parts:
    old.pop("calibration_source", None)
  steps.update({part: evaluation["step"] for part in new_parts})
  merged = {**old, **evaluation, "part_steps": {p: s for p, s in steps.items() if s is not None}}
  return update_eval_json(workdir, {"evaluation": merged})


class MetricsLog:
  """Appends JSON lines to workdir/metrics.jsonl and the scalars to TensorBoard event files
  (tensorboardX) in workdir/tensorboard; on resume, drops what lies past the restored step.

  In memory it keeps only what the curves need: every test record, and the train records
  thinned to at most `curve_points` (all of a short run; every 2^j-th step of a long one). The
  file keeps every step. Why: the IWAE paper's schedule is 9.8 M steps at batch 20, whose records
  held in memory would take about 10 GB."""

  def __init__(self, workdir: str, resume_step: int, write: bool = True,
               curve_points: int = 20_000, print_fn=print):
    self.tensorboard = None
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writes, self.curve_points = write, curve_points
    self.train, self.test, self.stride, self._train_seconds = [], [], 1, 0.0

    def kept_lines():  # Streamed: the file of a long run does not fit in memory as records.
      unreadable = None  # The number of a line that is not a record: only the last may be one.
      with open(self.path) as f:
        for number, line in enumerate(f, 1):
          if unreadable is not None:
            raise CheckpointError(
                f"{self.path}, line {unreadable}: not a metrics record; fix or delete that "
                "line (the lines after it are kept), or pass another --workdir")
          record = _metrics_record(line)
          if record is None:
            unreadable = number
          elif record["step"] <= resume_step:
            self._keep(record)
            yield line if line.endswith("\n") else line + "\n"
      if unreadable is not None:  # Cut by a crash while it was written: no step is lost.
        print_fn(f"warning: {self.path}: dropped its last line ({unreadable}), cut off "
                 "while it was written")

    if os.path.exists(self.path):
      if self.writes:  # Atomically: never a cut file.
        def rewrite(tmp):
          with open(tmp, "w") as f:
            f.writelines(kept_lines())
        write_atomically(self.path, rewrite)
      else:
        for _ in kept_lines():  # Another host writes the file; this one only reads the curve.
          pass
    if self.writes:
      from tensorboardX import SummaryWriter  # purge_step hides events of a run's lost steps.
      self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                       purge_step=resume_step + 1)
      _drop_events_that_cannot_be_written(self.tensorboard)

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
    try:
      with open(self.path, "a") as f:
        f.writelines(json.dumps(strict_json(r), allow_nan=False) + "\n" for r in records)
    except OSError as e:
      if e.filename:
        raise
      raise naming(e, self.path) from e
    for r in records:
      for k, v in r.items():
        if k not in ("step", "epoch", "split") and isinstance(v, float):
          self.tensorboard.add_scalar(f"{r['split']}/{k}", v, r["step"])

  def scalars(self, step: int, values: dict) -> None:
    """TensorBoard-only scalars of a step (learning rate, throughput): not training results."""
    if self.tensorboard is not None:
      for tag, value in values.items():
        self.tensorboard.add_scalar(tag, value, step)

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()

  def train_seconds(self) -> float:
    return self._train_seconds


def _drop_events_that_cannot_be_written(writer) -> None:
  """TensorBoard's events are a view of metrics.jsonl: when they cannot be written (a full disk)
  they are dropped quietly, where tensorboardX's writer thread and its exit handler would print a
  traceback each; the run stops with one line at its own failing write. (tensorboardX has no
  option for this: its file writer is wrapped, and left as it is if its layout changes.)"""
  records = writer._get_file_writer().event_writer  # pylint: disable=protected-access
  records = getattr(getattr(records, "_ev_writer", None), "_py_recordio_writer", None)
  for name in ("write", "flush", "close"):
    method = getattr(records, name, None)
    if method is not None:
      setattr(records, name, _ignoring_os_errors(method))


def _ignoring_os_errors(method):
  def call(*args, **kwargs):
    try:
      return method(*args, **kwargs)
    except OSError:
      return None
  return call


def _metrics_record(line: str) -> dict | None:
  """A metrics.jsonl line as its record; None where it is not one (cut off, or edited)."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  if not (isinstance(record, dict) and isinstance(record.get("step"), int)
          and isinstance(record.get("split"), str)):
    return None
  return record


def write_summaries(workdir: str, step: int, scalars: dict, images: dict | None = None) -> None:
  """Scalars (tag -> number) and images (tag -> uint8 (H, W) grid) into workdir/tensorboard at
  `step`, in an event file of their own beside training's (TensorBoard shows them together)."""
  from tensorboardX import SummaryWriter
  writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
  try:
    for tag, value in scalars.items():
      writer.add_scalar(tag, value, step)
    for tag, image in (images or {}).items():
      writer.add_image(tag, image, step, dataformats="HW")
  finally:
    writer.close()


STAGE1_CONFIG = "stage1_config.json"  # a prior's copy of the config of the stage 1 it was trained on
STAGE1_FOLDER = "stage1"              # where --stage1=FAMILY trains stage 1 (inside the prior's)


def stage1_workdir(config, workdir: str | None = None) -> str:
  """The stage-1 run a multi-stage config names: --stage1_workdir, or with --stage1=FAMILY the
  folder inside the run's own workdir that stage 1 is trained into."""
  if config.model.get("stage1") and workdir:
    return os.path.join(workdir, STAGE1_FOLDER)
  return config.model.stage1_workdir


def is_finished(workdir: str, step: int, num_epochs: int) -> bool:
  """Whether training wrote its results (eval.json) at `step`, the latest checkpoint's, after all
  of the run's configured epochs."""
  results = read_eval_json(workdir)
  return results.get("step") == step and results.get("epochs") == num_epochs


def load_stage1(config, family, workdir: str | None = None) -> models.Stage1 | None:
  """The trained run a multi-stage family builds on.

  A prior whose workdir (given) has checkpoints is self-contained: its stage 1 is built from the
  stage-1 config stored beside them (STAGE1_CONFIG) and its weights are the checkpoints' own, so
  a stage-1 workdir changed or deleted since cannot change what it decodes with (the variables
  returned are zeros of the right shapes, for the restore to overwrite). Otherwise the stage-1
  run (stage1_workdir) is loaded, checked: it exists, is of a family this one accepts, of the
  same dataset, and finished."""
  if not family.stage1_families:
    return None
  if workdir and is_self_contained(workdir):
    return _stored_stage1(config, workdir)
  accepted = " or ".join(f"--model={n}" for n in family.stage1_families)
  stage1_dir = stage1_workdir(config, workdir)
  if not stage1_dir:
    raise ValueError(f"--model={config.family} needs --stage1_workdir=<a finished run of "
                     f"{accepted}> (or --stage1=FAMILY, trained first)")
  try:
    saved = _saved_config(stage1_dir)
  except CheckpointError as e:
    raise _stage1_error(config, stage1_dir, e) from e
  if saved is None:
    raise ValueError(f"--stage1_workdir={stage1_dir} holds no run (no config.json); train one "
                     f"with {accepted} there first")
  if saved.family not in family.stage1_families:
    raise ValueError(f"--stage1_workdir={stage1_dir} holds a {saved.family!r} run, which "
                     f"{config.family} cannot build on; train one with {accepted}")
  if saved.data.dataset != config.data.dataset:
    raise ValueError(f"--stage1_workdir={stage1_dir} was trained on {saved.data.dataset!r}, this "
                     f"run is on {config.data.dataset!r}; pass --dataset={saved.data.dataset} or "
                     "another stage-1 run")
  try:
    stage1_config, _, stage1_model, state = restore_run(stage1_dir)
  except CheckpointError as e:
    raise _stage1_error(config, stage1_dir, e) from e
  if not is_finished(stage1_dir, int(state.step), stage1_config.run.num_epochs):
    raise ValueError(
        f"--stage1_workdir={stage1_dir} holds an unfinished run (its latest checkpoint, "
        f"step {int(state.step)}, is not the end of its {stage1_config.run.num_epochs} "
        f"epochs); finish it first: mnistgen-train --workdir={stage1_dir} resumes it")
  return models.Stage1(stage1_dir, stage1_config, stage1_model, state.variables())


def _stage1_error(config, stage1_dir: str, error: Exception) -> ValueError:
  """A stage-1 run's failure, said of the stage 1: its messages offer "another --workdir", which
  for a prior is the flag that names the stage 1."""
  flag = ("--stage1_workdir" if config.model.stage1_workdir
          else "--workdir (whose stage1/ is this stage 1)")
  return ValueError(f"stage 1 at {stage1_dir}: "
                    + str(error).replace("another --workdir", f"another {flag}"))


def _stored_stage1(config, workdir: str) -> models.Stage1:
  """The stage 1 of a prior's own workdir: its stored config, zero variables of its shapes."""
  path = os.path.join(workdir, STAGE1_CONFIG)
  try:
    with open(path) as f:
      stage1_config = configs.from_saved(json.load(f))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable or not a valid config ({e}); the prior's stage "
                          "1 is defined by it: restore it, or train the prior in another "
                          "--workdir") from e
  family = models.get(stage1_config.family)
  model = family.build(stage1_config, None)
  abstract = jax.eval_shape(lambda: train_setup.initial_state(family, model, stage1_config, 0)[1])
  zeros = jax.tree.map(lambda leaf: jax.numpy.zeros(leaf.shape, leaf.dtype), abstract.variables())
  return models.Stage1(stage1_workdir(config, workdir), stage1_config, model, zeros)


def write_stage1_config(workdir: str, stage1: models.Stage1) -> None:
  """Stores the config of the stage 1 a prior trains on beside its checkpoints (which hold the
  stage-1 weights): the prior then needs nothing else to decode."""
  path = os.path.join(workdir, STAGE1_CONFIG)
  text = stage1.config.to_json(indent=2)
  if os.path.exists(path):
    return  # written with the first checkpoint; never replaced by a later stage-1 workdir's
  os.makedirs(workdir, exist_ok=True)

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  write_atomically(path, write)


def is_self_contained(workdir: str) -> bool:
  """Whether a prior's workdir holds checkpoints and the config of their stage 1."""
  return (latest_checkpoint_step(workdir) is not None
          and os.path.exists(os.path.join(workdir, STAGE1_CONFIG)))


def latest_checkpoint_step(workdir: str) -> int | None:
  """The newest checkpoint's step (from the folder names, without opening the manager)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=None)


def is_finished_run(workdir: str, num_epochs: int | None = None) -> bool:
  """Whether workdir holds a run trained to the end of num_epochs epochs (is_finished; None: the
  epochs its own config.json asks)."""
  step = latest_checkpoint_step(workdir)
  if step is None:
    return False
  if num_epochs is None:
    config = _saved_config(workdir)
    if config is None:
      return False
    num_epochs = config.run.num_epochs
  return is_finished(workdir, step, num_epochs)


def is_evaluated(workdir: str) -> bool:
  """Whether eval.json's evaluation is of the latest checkpoint."""
  evaluation = read_eval_json(workdir).get("evaluation")
  return isinstance(evaluation, dict) and evaluation.get("step") == latest_checkpoint_step(workdir)


def build(config, workdir: str | None = None):
  """(family, module, stage1) of a config; a multi-stage family gets its stage-1 run loaded (from
  the run's own workdir where it is self-contained; load_stage1)."""
  family = models.get(config.family)
  stage1 = load_stage1(config, family, workdir)
  return family, family.build(config, stage1), stage1


def _saved_config(workdir: str):
  """The validated config of workdir's config.json; None where it holds no run yet."""
  saved = read_config(workdir)
  if saved is None:
    return None
  try:
    config = configs.from_saved(saved)
  except ValueError as e:
    raise CheckpointError(f"{config_path(workdir)} is not a valid config ({e}); "
                                     "pass another --workdir") from e
  check_trained_with(workdir, config)
  return config


def check_workdir(workdir: str, config) -> None:
  """Raises CheckpointError if workdir holds a run of another model or config."""
  saved = _saved_config(workdir)
  if saved is None:
    return
  check_same_run(workdir, saved, config)
  # A schedule that depends on the total would differ from a straight run of the new length.
  if config.train.lr_schedule == "cosine" and config.run.num_epochs != saved.run.num_epochs:
    raise CheckpointError(
        f"{workdir} was trained with --lr_schedule={config.train.lr_schedule} over "
        f"--num_epochs={saved.run.num_epochs}, which sets the rate of every step; resuming with "
        f"--num_epochs={config.run.num_epochs} would match no straight run: pass "
        f"--num_epochs={saved.run.num_epochs}, or train the longer run in another --workdir")


def check_not_past_the_end(workdir: str, step: int, total_steps: int, steps_per_epoch: int,
                           num_epochs: int) -> None:
  """A run resumed with fewer epochs than it has trained would describe its checkpoint wrongly."""
  if step > total_steps:
    done = -(-step // steps_per_epoch)
    raise CheckpointError(
        f"{workdir} has already trained {step} steps ({done} epochs), more than "
        f"--num_epochs={num_epochs}: pass --num_epochs={done} (or more) to resume it, "
        "mnistgen-evaluate to evaluate it, or another --workdir")


def load_config(workdir: str):
  """The validated config of the run in workdir."""
  config = _saved_config(workdir)
  if config is None:
    raise CheckpointError(f"{workdir} holds no run (no config.json); pass a workdir "
                                     "written by mnistgen-train")
  return config


def restore_run(workdir: str, step: int | None = None, config=None,
                trust_unverified: bool = False):
  """(config, family, model, state) of the run in workdir, at its latest (or given) checkpoint.
  config: the run's config with resumable fields changed (e.g. temperature), else the saved one.
  trust_unverified: restore a checkpoint whose digests are missing (checkpoint.TRUST)."""
  config = config or load_config(workdir)
  family, model, stage1 = build(config, workdir)
  # The state's structure, shapes and dtypes (the same for any number of steps) without computing
  # it: initialising eagerly ran ~90 small computations, 2.7 s of the conv VAE's evaluation.
  abstract = jax.eval_shape(lambda: train_setup.initial_state(family, model, config, 0, stage1)[1])
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # Where an eager init put it.
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                        abstract)
  ckpt = open_checkpoints(workdir, config.run.keep_checkpoints, trust_unverified)
  try:  # Closed on failure too: an open manager's threads print tracebacks at exit.
    if ckpt.latest_step() is None:
      raise CheckpointError(f"{workdir} holds no checkpoint yet; train it first")
    state = ckpt.restore(target, step)
  finally:
    ckpt.close()
  return config, family, model, state
