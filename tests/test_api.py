"""The Python API (mnistgen_jax.load_run) on tiny finished runs: sample, encode/decode, evaluate."""
import shutil

import numpy as np
import pytest

import mnistgen_jax
from mnistgen_jax import data, runs

# Every test here restores trained runs (pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow


def test_a_conditional_run_samples_labelled_uint8_digits(tiny_run):
  run = mnistgen_jax.load_run(tiny_run("cond_vae"))
  assert run.family == "cond_vae" and run.conditional and run.step == 4
  images, labels = run.sample(23, seed=1)
  assert images.shape == (23, 28, 28) and images.dtype == np.uint8 and images.std() > 0
  np.testing.assert_array_equal(labels, np.arange(23) % 10)  # drawn order: 0..9 cycling
  again, _ = run.sample(23, seed=1, batch_size=1000)
  np.testing.assert_array_equal(images, again)  # the same seed, the same digits
  other, _ = run.sample(23, seed=2)
  assert np.abs(other.astype(int) - images).max() > 0
  # Batch by batch (bounded memory): the batches of the same draw, in order.
  batches = list(run.sample_batches(23, seed=1, batch_size=10))
  assert [start for start, _ in batches] == [0, 10, 20]
  assert [len(b) for _, b in batches] == [10, 10, 3]
  sevens, labels = run.sample(5, digit=7)
  assert sevens.shape == (5, 28, 28) and labels.tolist() == [7] * 5


def test_encode_then_decode_is_the_reconstruction(tiny_run, mnist_slice):
  run = mnistgen_jax.load_run(tiny_run("cond_vae"))
  images, labels = mnist_slice[0][:6, ..., 0], mnist_slice[1][:6]  # (6, 28, 28) as sample gives
  codes = run.encode(images, labels)
  assert codes.shape == (6, run.config.model.latent_dim)
  decoded = run.decode(codes, labels)
  assert decoded.shape == (6, 28, 28) and decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded, run.reconstruct(mnist_slice[0][:6], labels))
  with pytest.raises(ValueError, match="conditional: pass the labels"):
    run.encode(images)
  with pytest.raises(ValueError, match="must be uint8"):
    run.encode(images / 255.0, labels)
  with pytest.raises(ValueError, match=r"must be \(N, 28, 28\)"):
    run.encode(images[:, :14], labels)


def test_an_unconditional_run_has_no_labels_and_refuses_a_digit(tiny_run):
  run = mnistgen_jax.load_run(tiny_run("vae"))
  images, labels = run.sample(4)
  assert images.shape == (4, 28, 28) and labels is None
  with pytest.raises(ValueError, match="'vae' is unconditional"):
    run.sample(4, digit=3)
  with pytest.raises(ValueError, match="temperature= is not a sampling field of 'vae' runs"):
    mnistgen_jax.load_run(tiny_run("vae"), temperature=0.5)


def test_evaluate_returns_what_eval_json_stores(tiny_run, tmp_path):
  workdir = str(tmp_path / "vae")
  shutil.copytree(tiny_run("vae"), workdir)  # The shared run's eval.json stays as it is.
  run = mnistgen_jax.load_run(workdir)
  scores = run.evaluate(num_samples=200, iwae_samples=2, save=True)
  assert scores["step"] == run.step and scores["num_samples"] == 200
  assert {"reconstructions", "samples", "iwae_nll_k2"} <= set(scores)
  assert np.isfinite(scores["samples"]["fid_lenet"]) and scores["samples"]["fid_lenet"] > 0
  stored = runs.read_eval_json(workdir)["evaluation"]
  # eval.json adds at which step each part was computed (runs.update_evaluation).
  assert {k: v for k, v in stored.items() if k not in ("part_steps", "stale")} == scores
  assert stored["part_steps"] == dict.fromkeys(("reconstructions", "samples", "iwae_nll_k2"),
                                               run.step) and stored["stale"] == []
  assert data.info(run.config.data.dataset).num_classes == run.num_classes == 10
