"""A run's workdir: its lock, its config.json (written with the first checkpoint), checked on resume.

`lock(workdir)` makes one process own a workdir while it trains there: an OS file lock (flock) on
workdir/.lock, which dies with its process, so a killed run never leaves a stale lock behind.

`workdir/config.json` records what the checkpoints were trained with; a later run in the same
workdir must match it (except the resumable fields), so a checkpoint is never restored into, or
overwritten by, another model or config. No model and no config registry here (layer 1): the
caller turns the saved dict into a config.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket

from mnistgen_jax.checkpoint import CheckpointError
from mnistgen_jax.files import write_atomically


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


def os_error_in(error: BaseException) -> OSError | None:
  """The OSError behind `error` (itself, or its cause / context: orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def os_error_line(error: OSError, then: str) -> str:
  """One line for a failed write or read: what, where, and for a full disk what to do `then`."""
  where = f": {error.filename}" if error.filename else ""
  line = f"{error.strerror or error}{where}"
  if error.errno == errno.ENOSPC:
    line += f"; free some space, then {then}"
  return line


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
  if not isinstance(saved, dict) or not isinstance(saved.get("model"), str):
    raise CheckpointError(f"{path} names no model; pass another --workdir")
  return saved


def check_same_run(workdir: str, saved: dict, current: dict, resumable) -> None:
  """Raises CheckpointError if the saved config (a dict) differs from current beyond resumable."""
  if saved.get("model") != current["model"]:
    raise CheckpointError(f"{workdir} holds a {saved.get('model')!r} run, not "
                          f"{current['model']!r}; pass another --workdir or --model="
                          + str(saved.get("model")))
  diffs = [f"{k}={saved.get(k)!r} (now {current.get(k)!r})" for k in sorted(current)
           if k not in resumable and saved.get(k) != current.get(k)]
  if diffs:
    raise CheckpointError(f"{workdir} was trained with {', '.join(diffs)}; pass the same values "
                          "or another --workdir")


def write_config(workdir: str, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  path, text = config_path(workdir), config.to_json(indent=2)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return  # Unchanged (a resumed run): leave the file, and the folder, untouched.
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  write_atomically(path, write)  # Never a half-written config.
