"""--distributed for real: two processes (one CPU device each, gloo collectives) train one run
through jax.distributed.initialize, as two hosts would."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnistgen_jax import configs, runs, trainer
from conftest import ROOT

RUN = dict(model="vae", train_size=1024, test_size=200, batch_size=64, num_epochs=2, hidden=(64,),
           latent_dim=4, log_every=8)


@pytest.mark.slow
def test_two_processes_train_one_run_like_one_process(tmp_path):
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  flags = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in RUN.items()]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'multi'}", "--distributed",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}", *flags],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate() for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
  assert "2 CPU device(s)" in outputs[0][0] and "done: 32 steps" in outputs[0][0]
  assert "done:" not in outputs[1][0]  # Only process 0 reports and writes.
  assert json.loads((tmp_path / "multi" / "eval.json").read_text())["step"] == 32

  config = configs.get_config(**RUN)  # The same run in this single process, on one device.
  trainer.train_and_evaluate(config, str(tmp_path / "single"), print_fn=lambda s: None)
  multi = runs.restore_run(str(tmp_path / "multi"))[3]
  single = runs.restore_run(str(tmp_path / "single"))[3]
  for a, b in zip(jax.tree.leaves(multi.params), jax.tree.leaves(single.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
