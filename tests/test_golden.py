"""Every family's losses after a few steps on fixed real data, bit for bit against a record.

The record (tests/golden/<family>.json) holds the train loss terms of each of the 4
steps of a tiny one-epoch run and its test evaluation, as float32 hex. A refactor of the loop, the
set-up, the runs or the configs must leave them unchanged. XLA:CPU's kernels differ between
instruction sets (AVX2 or AVX-512), so the bits are compared on the kind of CPU the record was made
on, and to float32 rounding (rtol 1e-4) elsewhere.

Rewrite the record (only when a change is meant to change the numbers):
  MNISTGEN_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""
import json
import os
import platform

import numpy as np
import pytest

from conftest import tiny_config
from mnistgen_jax import models, trainer

pytestmark = pytest.mark.slow
RECORDS = os.path.join(os.path.dirname(__file__), "golden")
UPDATE = os.environ.get("MNISTGEN_UPDATE_GOLDEN") == "1"


def cpu_kind() -> str:
  """The instruction-set family XLA:CPU compiles for: 'avx512', 'avx2' or the machine name."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line for line in f if line.startswith("flags")), "").split()
  except OSError:
    flags = []
  for kind in ("avx512f", "avx2"):
    if kind in flags:
      return kind.rstrip("f")
  return platform.machine()


def _hex(value: float) -> str:
  return np.float32(value).tobytes().hex()


def _run(name, tmp_path_factory, tiny_run):
  overrides = dict(num_epochs=1, lr_schedule="constant")
  stage1_families = models.get(name).stage1_families
  if stage1_families:
    overrides["stage1_workdir"] = tiny_run(stage1_families[0])
  workdir = str(tmp_path_factory.mktemp(f"golden_{name}"))
  trainer.train_and_evaluate(tiny_config(name, **overrides), workdir, print_fn=lambda *a: None)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  skip = {"step", "epoch", "split", "train_seconds"}
  return [{k: _hex(v) for k, v in sorted(r.items()) if k not in skip and isinstance(v, float)}
          for r in records]


@pytest.mark.parametrize("name", models.names())
def test_losses_match_the_record(name, tmp_path_factory, tiny_run):
  got = _run(name, tmp_path_factory, tiny_run)
  assert len(got) == 5 and all(got)  # 4 train steps and the epoch's test evaluation.
  path = os.path.join(RECORDS, f"{name}.json")
  if UPDATE:
    with open(path, "w") as f:
      json.dump({"cpu": cpu_kind(), "records": got}, f, indent=1, sort_keys=True)
      f.write("\n")
    return
  assert os.path.exists(path), f"{name} has no golden record: run with MNISTGEN_UPDATE_GOLDEN=1"
  with open(path) as f:
    record = json.load(f)
  want = record["records"]
  assert [sorted(r) for r in got] == [sorted(r) for r in want]
  if record["cpu"] == cpu_kind():
    assert got == want
  else:
    as_float = lambda rows: np.array([np.frombuffer(bytes.fromhex(v), np.float32)[0]
                                      for r in rows for _, v in sorted(r.items())])
    np.testing.assert_allclose(as_float(got), as_float(want), rtol=1e-4)
