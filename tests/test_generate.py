import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from mnistgen_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  for name in ("cond_vae", "ae"):
    trainer.train_and_evaluate(tiny_config(name, num_epochs=1), str(root / name),
                               print_fn=lambda *a: None)
  return root


def _generate(*args):
  return subprocess.run([sys.executable, "-m", "experiments.generate", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_generate_a_digit_as_png_and_npy(runs, tmp_path):
  out, npy = tmp_path / "d.png", tmp_path / "d.npy"
  proc = _generate(f"--workdir={runs / 'cond_vae'}", "--num=12", "--digit=3", f"--out={out}",
                   f"--npy={npy}", "--seed=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  images = np.load(npy)
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
  assert Image.open(out).size == (2 * (4 * 30 + 2), 2 * (3 * 30 + 2))  # 4 columns, 3 rows
  again = tmp_path / "again.npy"
  _generate(f"--workdir={runs / 'cond_vae'}", "--num=12", "--digit=3", f"--out={out}",
            f"--npy={again}", "--seed=1")
  np.testing.assert_array_equal(images, np.load(again))  # Same seed, same digits.


def test_plain_autoencoder_samples_through_its_fitted_prior(runs, tmp_path):
  proc = _generate(f"--workdir={runs / 'ae'}", "--num=5", f"--out={tmp_path / 'a.png'}",
                   f"--npy={tmp_path / 'a.npy'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  images = np.load(tmp_path / "a.npy")
  assert images.shape == (5, 28, 28, 1) and images.std() > 0


@pytest.mark.parametrize("args,message", [
    (["--digit=3"], "error: --digit needs a conditional model; 'ae' is unconditional"),
    (["--num=0"], "error: --num must be a positive integer, got 0"),
    (["--temperature=0.5"], "error: --temperature applies to autoregressive priors, not 'ae'"),
])
def test_bad_requests_are_one_clear_line(runs, tmp_path, args, message):
  proc = _generate(f"--workdir={runs / 'ae'}", f"--out={tmp_path / 'x.png'}", *args)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(message)
  assert not (tmp_path / "x.png").exists()
