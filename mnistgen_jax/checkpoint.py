"""Orbax checkpoints of the whole train state, verified by sha256 digests before restore.

The run's config.json beside them (what they were trained with) is runs.py's concern.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint import checkpoint_managers as policies

from mnistgen_jax.errors import UserError, expected_error_line, naming, os_error_in
from mnistgen_jax.files import write_atomically



DELETED_SUBDIR = ".deleted"
PENDING = "pending"  # A step's digests entry while it is being saved.
TRUST = ("pass --trust_unverified_checkpoint to use them as they are (at your own risk), or "
         "another --workdir")


@contextlib.contextmanager
def _failure_noise_held_back():
  """What orbax and tensorstore print while a save runs (a full disk: its error logged with a
  traceback by each of orbax's threads, then tracebacks of callbacks into closed event loops),
  held back: passed on when the save succeeds, or fails for an unexpected reason (a bug), and
  dropped when it fails for an expected one, which the binary then says in one line."""
  held, stderr = io.StringIO(), sys.stderr
  absl_handler = absl_logging.get_absl_handler().python_handler
  sys.stderr, absl_stream = held, absl_handler.setStream(held)
  shown = True
  try:
    yield
  except BaseException as e:
    shown = isinstance(e, Exception) and expected_error_line(e) is None
    if not shown:  # Its failed asyncio tasks log "exception was never retrieved" when collected.
      logging.getLogger("asyncio").addFilter(_expected_failures_of_tasks_dropped)
    raise
  finally:
    sys.stderr = stderr
    absl_handler.setStream(absl_stream)
    if shown and held.getvalue():
      stderr.write(held.getvalue())


def _expected_failures_of_tasks_dropped(record: logging.LogRecord) -> bool:
  """asyncio's log of a collected task that failed for an expected reason: dropped (the binary
  has said it in one line)."""
  error = record.exc_info[1] if record.exc_info else None
  return not (isinstance(error, Exception) and expected_error_line(error) is not None)


class CheckpointError(UserError):
  """A checkpoint or workdir that cannot be used as asked; the message says what to do."""


def _file_digests(step_dir: str) -> dict:
  """sha256 of every file of a saved checkpoint's state (its 'default' item), by relative path."""
  root = os.path.join(step_dir, "default")
  digests = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        digests[os.path.relpath(path, root)] = hashlib.file_digest(f, "sha256").hexdigest()
  return digests


class Checkpointer:
  """Keeps the last `keep` checkpoints and the best one by `best_metric` (lower is better).

  Beside them, workdir/checkpoint_digests.json holds the sha256 of every file of each checkpoint,
  checked before a restore: orbax reads truncated or altered files without complaint.

  An old checkpoint is dropped by an atomic rename into checkpoints/.deleted (orbax's
  todelete_subdir), emptied by us afterwards: a run killed while deleting in place would leave a
  half-deleted step folder that still counts as a checkpoint and fails its digests."""

  def __init__(self, workdir: str, keep: int, best_metric: str = "loss",
               trust_unverified: bool = False, writer: bool = False):
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=False, create=True,
        todelete_subdir=DELETED_SUBDIR,
        # The writer (training, which holds the run's lock) removes the unfinished save folders
        # a kill left; a reader must not: they may be a running save's.
        cleanup_tmp_directories=writer)
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.best_metric = best_metric
    self.digests_path = os.path.join(os.path.abspath(workdir), "checkpoint_digests.json")
    self.trust_unverified = trust_unverified

  def _read_digests(self) -> dict | None:
    """{step: {file: sha256} or PENDING}; None where the file does not exist."""
    try:
      with open(self.digests_path) as f:
        digests = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError) as e:
      digests = e
    if not (isinstance(digests, dict) and all(
        v == PENDING or isinstance(v, dict) for v in digests.values())):
      raise CheckpointError(f"{self.digests_path} is not a digests file (edited or damaged), so "
                            f"the checkpoints cannot be verified; {TRUST}")
    return digests

  def _write(self, digests: dict) -> None:
    def write(tmp):
      with open(tmp, "w") as f:
        json.dump(digests, f, indent=1)
    write_atomically(self.digests_path, write)  # A crash leaves the old file.

  def _kept_digests(self) -> dict:
    kept = {str(s) for s in self.manager.all_steps()}
    try:
      digests = self._read_digests() or {}
    except CheckpointError:
      if not self.trust_unverified:
        raise
      digests = {}  # Trusted as they are: the steps saved from now on get digests.
    return {k: v for k, v in digests.items() if k in kept}

  def _write_digests(self, step: int) -> None:
    if jax.process_index() != 0:
      return
    digests = self._kept_digests()
    digests[str(step)] = _file_digests(os.path.join(self.directory, str(step)))
    self._write(digests)

  def drop_cut_off_save(self) -> int | None:
    """The latest checkpoint, when its save was cut off before its digest was written (a kill
    in that moment; marked PENDING before the save began), moved out of the checkpoints: it
    cannot be verified, and resuming from the one before it trains the same steps again
    exactly. Returns its step, else None. Called by the trainer, under the workdir's lock."""
    step = self.manager.latest_step()
    digests = self._read_digests() or {}
    if step is None or digests.get(str(step)) != PENDING or self.trust_unverified:
      return None
    self.manager.delete(step)
    self._empty_deleted()
    self.manager.reload()
    return step

  def _verify(self, step: int) -> None:
    """Every restore: the digests of `step` match its files, or --trust_unverified_checkpoint."""
    if self.trust_unverified:
      return
    digests = self._read_digests()
    if digests is None:
      raise CheckpointError(f"{self.digests_path} is missing, so the checkpoints of "
                            f"{self.directory} cannot be verified; {TRUST}")
    expected = digests.get(str(step))
    if not isinstance(expected, dict):
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} has no digest in {self.digests_path} (its save "
          "was cut off, or the file was edited); delete that step's folder to resume from the "
          f"checkpoint before it, or {TRUST}")
    actual = _file_digests(os.path.join(self.directory, str(step)))
    bad = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if bad:
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} is corrupted ({len(bad)} file(s) differ from when "
          f"it was saved, e.g. {bad[0]}); delete that step's folder to resume from an earlier "
          "checkpoint, or pass another --workdir")

  def save(self, step: int, state, metrics: dict | None = None) -> None:
    if step in self.manager.all_steps():
      return  # Already saved (e.g. an epoch end that is also a save interval).
    self._empty_deleted()  # A kill may have left a half-emptied one; a rename into it needs room.
    if jax.process_index() == 0:  # Marked before the save: a kill before its digest is known.
      self._write({**self._kept_digests(), str(step): PENDING})
    try:
      with _failure_noise_held_back():
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
        self.manager.wait_until_finished()
    except BaseException as e:  # A second Ctrl-C, SIGTERM, a full disk: no unfinished folder.
      if jax.process_index() == 0:
        for unfinished in glob.glob(os.path.join(glob.escape(self.directory),
                                                 f"{step}.orbax-checkpoint-tmp*")):
          shutil.rmtree(unfinished, ignore_errors=True)
      os_error = os_error_in(e) if isinstance(e, Exception) else None
      if os_error is not None and not os_error.filename:  # Some of orbax's writes name no file.
        raise naming(os_error, self.directory) from e
      raise
    self._write_digests(step)
    self._empty_deleted()

  def _empty_deleted(self) -> None:
    if jax.process_index() == 0:
      shutil.rmtree(os.path.join(self.directory, DELETED_SUBDIR), ignore_errors=True)

  def latest_step(self):
    return self.manager.latest_step()

  def best_step(self):
    return self.manager.best_step()

  def _check_shapes(self, step: int, target) -> None:
    """Compares the stored arrays' names and shapes with `target` before reading any data: orbax
    stops at the first mismatch and leaves reads in flight that print tracebacks at exit."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Quiet its warning that our manager's metadata is elsewhere.
    try:
      with ocp.StandardCheckpointer() as reader:
        stored = reader.metadata(os.path.join(self.directory, str(step), "default")).item_metadata
    finally:
      absl_logger.setLevel(level)
    stored, wanted = _shapes(stored), _shapes(target)
    if not stored:
      raise CheckpointError(f"checkpoint {self.directory}/{step} has no readable array metadata "
                            "(corrupted?); delete that step's folder to resume from an earlier "
                            "checkpoint, or pass another --workdir")
    problems = [f"{k} missing" for k in sorted(wanted.keys() - stored.keys())]
    problems += [f"{k} unexpected" for k in sorted(stored.keys() - wanted.keys())]
    problems += [f"{k} has shape {stored[k]}, the model {wanted[k]}"
                 for k in sorted(stored.keys() & wanted.keys()) if stored[k] != wanted[k]]
    if problems:
      raise CheckpointError(f"checkpoint {self.directory}/{step} does not fit this model "
                            f"({len(problems)} arrays differ, e.g. {'; '.join(problems[:2])}); "
                            "pass another --workdir")

  def restore(self, target, step: int | None = None):
    """Restores into the structure of `target` (a freshly initialised state)."""
    step = self.manager.latest_step() if step is None else step
    if step not in self.manager.all_steps():
      kept = ", ".join(map(str, sorted(self.manager.all_steps()))) or "none"
      raise CheckpointError(f"{self.directory} holds no checkpoint of step {step} (kept: {kept}; "
                            "older ones are deleted as newer ones are saved, see "
                            "--keep_checkpoints); pass one of those steps")
    try:
      self._verify(step)
      self._check_shapes(step, target)
      return self.manager.restore(step, args=ocp.args.StandardRestore(target))
    except CheckpointError:
      raise
    except Exception as e:  # orbax raises many types for structure mismatch or corrupt files.
      raise CheckpointError(f"checkpoint {self.directory}/{step} cannot be restored "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                            "pass another --workdir") from e

  def close(self):
    self.manager.close()


def _shapes(tree) -> dict:
  """{'a/b/c': shape} of a pytree's array leaves (state or orbax metadata alike)."""
  def name(path):
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
  return {name(path): tuple(np.shape(leaf))  # np.shape reads .shape first: metadata works too
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
