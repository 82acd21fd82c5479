"""Data parallelism: 8 forced CPU devices train to the same parameters as 1 (in a subprocess, as
XLA_FLAGS must be set before jax starts)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TOLERANCE = 1e-5  # Max abs difference of any parameter/state entry after 4 steps (float32 sums).

SCRIPT = r"""
import json, os, sys
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests")]
import jax, numpy as np
from conftest import tiny_config
from mnistgen_jax import parallel, runs, trainer
from mnistgen_jax import train as train_lib

root, out = sys.argv[1], {"devices": jax.device_count()}
for name in ("vae", "vqvae", "dcgan"):
  states = {}
  for n in (1, 8):
    extra = {"channels": (16, 32)} if name == "dcgan" else {}
    config = tiny_config(name, num_epochs=1, num_devices=n, log_every=4, **extra)
    trainer.train_and_evaluate(config, f"{root}/{name}_{n}", print_fn=lambda s: None)
    states[n] = runs.restore_run(f"{root}/{name}_{n}")[3]
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b))),
                       (states[1].params, states[1].model_state),
                       (states[8].params, states[8].model_state))
  out[name] = max(jax.tree.leaves(diffs))

# The compiled step really splits the batch: a replicated state, sharded batches, an all-reduce.
config = tiny_config("vae", log_every=4)
_, family, model, state = runs.restore_run(f"{root}/vae_8")
mesh = parallel.make_mesh(8)
tx = train_lib.make_optimizer(config, 4)
run = train_lib.make_chunk_runner(model, tx, mesh=mesh)
images, labels = np.zeros((256, 28, 28, 1), np.uint8), np.zeros((256,), np.int32)
args = parallel.put((state, images, labels), parallel.replicated(mesh))
batches = parallel.put(np.arange(256).reshape(4, 64), parallel.batch_sharding(mesh, 2, axis=1))
hlo = run.lower(*args, batches, 0, length=4).compile().as_text()
out["all_reduce"] = "all-reduce" in hlo
new_state, _ = run(*args, batches, 0, length=4)
out["replicated"] = all(len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
                        for leaf in jax.tree.leaves(new_state.params))
errors = []
for bad in (dict(batch_size=60), dict(num_devices=9)):
  try:
    trainer.train_and_evaluate(tiny_config("vae", **bad), f"{root}/bad", print_fn=print)
  except ValueError as e:
    errors.append(str(e))
out["errors"], out["bad_workdir_written"] = errors, os.path.exists(f"{root}/bad")
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ")[-1])
  assert result["devices"] == 8
  for name in ("vae", "vqvae", "dcgan"):  # vqvae: EMA codebook; dcgan: BatchNorm statistics.
    assert result[name] < TOLERANCE, (name, result[name])
  assert result["all_reduce"] and result["replicated"]
  assert result["errors"] == [
      "--batch_size=60 does not split over 8 devices; pass a multiple of 8 (e.g. 56) or "
      "--num_devices",
      "--num_devices=9 but only 8 CPU device(s) are visible; pass at most 8 (0 = all)"]
  assert not result["bad_workdir_written"]
