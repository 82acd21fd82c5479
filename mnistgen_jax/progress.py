"""Progress of long loops: a tqdm bar on a terminal, plain lines elsewhere.

Redirected to a file (a log, a notebook's captured output, CI), a bar's carriage returns make one
line of thousands of characters; there the loop prints `desc: i/total unit (s)` at every quarter
instead. Layer 1: imports nothing of the package.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Iterable

from tqdm import tqdm

PLAIN_LINES = 4  # lines per loop when not on a terminal


def progress(iterable: Iterable, desc: str, unit: str = "it", disable: bool = False,
             total: int | None = None, leave: bool = False, stream=None):
  """`iterable`, showing its progress on `stream` (stderr) unless `disable`."""
  if disable:
    return iterable
  stream = stream or sys.stderr
  if getattr(stream, "isatty", lambda: False)():
    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, file=stream)
  if total is None:
    total = len(iterable) if hasattr(iterable, "__len__") else None
  return _plain_lines(iterable, desc, unit, total, stream)


def _plain_lines(iterable, desc, unit, total, stream):
  start = time.perf_counter()
  marks = {max(1, math.ceil(total * q / PLAIN_LINES)) for q in range(1, PLAIN_LINES + 1)} if total \
      else set()
  done = 0
  for item in iterable:
    yield item
    done += 1
    if done in marks:
      print(f"{desc}: {done}/{total} {unit} ({time.perf_counter() - start:.1f} s)", file=stream,
            flush=True)
  if not total:
    print(f"{desc}: {done} {unit} ({time.perf_counter() - start:.1f} s)", file=stream, flush=True)
