"""Local files: writes that are never seen half done, and the per-user cache directory.

Layer 1 and imports nothing of the package, so that `data` (the lowest layer) can keep verified
arrays in the cache as the evaluation keeps its reference statistics and the binaries their
compiled computations.
"""
from __future__ import annotations

import math
import numbers
import os


def write_atomically(path: str, write) -> None:
  """write(tmp) then an atomic rename onto `path`: a crash or a failure (a full disk) leaves the
  old file, never a cut one, and no temporary file behind (the OSError goes on). The temporary
  name carries the process id: two processes writing the same cache file never write into one."""
  base, ext = os.path.splitext(path)
  tmp = f"{base}.tmp{os.getpid()}{ext}"  # Same extension: writers that pick a format by it still can.
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
