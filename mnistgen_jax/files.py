"""Local files: writes that are never seen half done, and the per-user cache directory.

Layer 1 and imports nothing of the package, so that `data` (the lowest layer) can keep verified
arrays in the cache as the evaluation keeps its reference statistics and the binaries their
compiled computations.
"""
from __future__ import annotations

import glob
import math
import numbers
import os
import time

from mnistgen_jax.errors import naming


def write_atomically(path: str, write) -> None:
  """write(tmp) then an atomic rename onto `path`: a crash or a failure (a full disk) leaves the
  old file, never a cut one, and no temporary file behind (the OSError goes on). The temporary
  name carries the process id: two processes writing the same cache file never write into one."""
  base, ext = os.path.splitext(path)
  tmp = f"{base}.tmp{os.getpid()}{ext}"  # Same extension: writers that pick a format by it still can.
  remove_orphans(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:
      raise naming(e, path) from e
    raise


ORPHAN_AGE_SECONDS = 600  # younger temporary files may be another host's write in progress


def remove_orphans(path: str) -> list[str]:
  """Deletes the temporary files of `path` (write_atomically's) left by writers that were killed
  (SIGKILL, a lost machine): those whose process is gone and that are older than
  ORPHAN_AGE_SECONDS (a process id is only this host's). Returns what it deleted."""
  base, ext = os.path.splitext(path)
  removed = []
  for tmp in glob.glob(glob.escape(base) + ".tmp*" + glob.escape(ext)):
    pid = tmp[len(base) + len(".tmp"):len(tmp) - len(ext)]
    try:
      old = time.time() - os.path.getmtime(tmp) > ORPHAN_AGE_SECONDS
      if pid.isdigit() and old and not _alive(int(pid)):
        os.remove(tmp)
        removed.append(tmp)
    except OSError:
      pass  # Gone meanwhile, or not ours to delete: left alone.
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process.
  return True


def cache_dir() -> str:
  """$MNISTGEN_JAX_CACHE, else $XDG_CACHE_HOME/mnistgen_jax, else ~/.cache/mnistgen_jax."""
  return os.environ.get("MNISTGEN_JAX_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mnistgen_jax")


def strict_json(obj):
  """obj with every float that is not finite (NaN, +-inf, numpy's too) as None: JSON has no NaN
  or Infinity (json.dump writes them by default, and strict readers refuse the file)."""
  if isinstance(obj, dict):
    return {k: strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict_json(v) for v in obj]
  if isinstance(obj, numbers.Integral) and not isinstance(obj, bool):
    return int(obj)  # numpy's integers too, which json cannot write
  if isinstance(obj, numbers.Real):
    value = float(obj)
    return value if math.isfinite(value) else None
  return obj
