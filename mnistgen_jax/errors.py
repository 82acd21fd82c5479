"""The failures a user can act on, and how a binary says them: one line naming the cause and the
fix (cli.run_binary prints it and exits with status 2). Imports nothing of the package."""
from __future__ import annotations

import errno
import os
import re


class UserError(RuntimeError):
  """An expected failure: bad input, or a state of files the user can fix (a missing run, a
  corrupted checkpoint, a diverging loss); its message names the cause and the fix."""


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped training after a chunk, whose step was saved as a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def os_error_in(error: BaseException) -> OSError | None:
  """The OSError behind `error` (itself, or its cause / context: orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def naming(error: OSError, path: str) -> OSError:
  """The OS error as it is where it names its file, else the same error naming `path` (a full
  disk fails at a flush or in a library's write, which name none): the one line then says where."""
  return error if error.filename else OSError(error.errno, error.strerror, path)


def os_error_line(error: OSError, then: str) -> str:
  """One line for a failed write or read: what, where, and for a full disk what to do `then`."""
  where = f": {error.filename}" if error.filename else ""
  line = f"{error.strerror or error}{where}"
  if error.errno == errno.ENOSPC:
    line += f"; free some space, then {then}"
  return line


# tensorstore (under orbax) reports a failed write as a ValueError whose message names the file
# and ends with the OS error's code, e.g. 'RESOURCE_EXHAUSTED: Error writing "x" ... at local
# file "DIR/...": ... No space left on device [os_error_code='28']' or 'RESOURCE_EXHAUSTED:
# Failed writing: "DIR/...": ...'.
_TENSORSTORE_FULL_DISK = re.compile(
    r'(?:local file|Failed writing:) "(?P<path>[^"]*)".*\[os_error_code=.?%d.?\]' % errno.ENOSPC,
    re.DOTALL)


def expected_error_line(error: BaseException, then: str = "run the same command again") -> str | None:
  """The one line for an expected failure (bad input, a UserError, an OS error however wrapped,
  a full disk under tensorstore), None for anything else (a bug: its traceback is worth seeing)."""
  full = _TENSORSTORE_FULL_DISK.search(str(error))
  if full:  # Said of the checkpoints folder, not orbax's temporary one inside it.
    where = re.sub(r"/[^/]*\.orbax-checkpoint-tmp.*$", "", full["path"].rstrip("/"))
    return os_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where), then)
  if isinstance(error, (ValueError, UserError)):
    return str(error)
  os_error = os_error_in(error)
  return None if os_error is None else os_error_line(os_error, then)
