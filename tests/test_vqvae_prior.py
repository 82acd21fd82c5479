import json

import jax
import numpy as np
import pytest

from conftest import tiny_config
from mnistgen_jax import runs, trainer

# End-to-end: every test here trains or restores whole runs (pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow


def _quiet(*args):
  del args


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vq"))
  trainer.train_and_evaluate(tiny_config("vqvae", num_codes=16, code_dim=4), workdir,
                             print_fn=_quiet)
  return workdir


def test_prior_trains_with_stage1_frozen_and_samples_digits_grid(stage1, tmp_path):
  config = tiny_config("vqvae_cond_prior", stage1_workdir=stage1, prior_width=32, prior_layers=1,
                       prior_heads=2)
  result = trainer.train_and_evaluate(config, str(tmp_path), print_fn=_quiet)
  assert np.isfinite(result["test"]["code_nll"]) and result["test"]["code_nll"] > 0
  _, _, model, prior_state = runs.restore_run(str(tmp_path))
  vq_state = runs.restore_run(stage1)[3]
  # Every stage-1 variable inside the prior equals the trained VQ-VAE's, after training.
  for collection, tree in vq_state.variables().items():
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(prior_state.variables()[collection]["vq"])):
      np.testing.assert_array_equal(a, b)
  assert (tmp_path / "samples.png").exists()
  labels = np.repeat(np.arange(3), 2).astype(np.int32)
  codes = model.apply(prior_state.variables(), labels, method="sample_codes",
                      rngs={"sample": jax.random.PRNGKey(0)})
  assert codes.shape == (6, 7, 7) and int(codes.max()) < 16 and int(codes.min()) >= 0


def test_prior_loss_decreases(stage1, tmp_path):
  config = tiny_config("vqvae_prior", stage1_workdir=stage1, prior_width=32, prior_layers=1,
                       prior_heads=2, num_epochs=4, learning_rate=3e-3)
  trainer.train_and_evaluate(config, str(tmp_path), print_fn=_quiet)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  test = [r["loss"] for r in records if r["split"] == "test"]
  assert test[-1] < test[0]


@pytest.mark.parametrize("workdir,message", [
    ("", "needs --stage1_workdir"),
    ("/nonexistent", "holds no run"),
])
def test_prior_refuses_a_missing_stage1(workdir, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(tiny_config("vqvae_prior", stage1_workdir=workdir),
                               str(tmp_path / "p"), print_fn=_quiet)
  assert not (tmp_path / "p").exists()


def test_prior_refuses_a_workdir_that_is_not_a_vqvae_run(tmp_path):
  trainer.train_and_evaluate(tiny_config("ae", num_epochs=1), str(tmp_path / "ae"), print_fn=_quiet)
  with pytest.raises(ValueError, match="holds a 'ae' run, which vqvae_prior cannot build on; "
                     "train one with --model=vqvae"):
    trainer.train_and_evaluate(tiny_config("vqvae_prior", stage1_workdir=str(tmp_path / "ae")),
                               str(tmp_path / "p"), print_fn=_quiet)
