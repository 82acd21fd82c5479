"""Local files: writes that are never seen half done, and the per-user cache directory.

Layer 1 and imports nothing of the package, so that `data` (the lowest layer) can keep verified
arrays in the cache as the evaluation keeps its reference statistics and the binaries their
compiled computations.
"""
from __future__ import annotations

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
