"""Equal-parameter presets and the budget comparison command."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistgen_jax import configs, models
from mnistgen_jax.models import vqvae as vqvae_lib
from conftest import ROOT



def _trained_params(model) -> int:
  x, y = jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x, y, method="losses"))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name", ["ae", "vae", "conv_vae", "cond_vae", "vqvae_prior",
                                  "vqvae_cond_prior", "dcgan", "cond_dcgan", "flow", "cond_flow"])
def test_1m_preset_builds_about_one_million_parameters(name):
  config = configs.get_config(name, preset="1m")
  if name.startswith("vqvae"):  # Stage 1 (vqvae preset) plus the prior, counted together.
    stage1_config = configs.get_config("vqvae", preset="1m")
    stage1 = models.Stage1("", stage1_config, vqvae_lib.build(stage1_config), {})
    model = models.get(name).build(config, stage1)
  else:
    model = models.get(name).build(config)
  assert abs(_trained_params(model) - 1_000_000) <= 30_000, _trained_params(model)


def test_1m_latent_flow_prior_is_small_beside_its_1m_stage1():
  stage1_config = configs.get_config("conv_vae", preset="1m")
  stage1_model = models.get("conv_vae").build(stage1_config)
  shapes = jax.eval_shape(lambda: stage1_model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)},
      jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32), method="losses"))
  stage1 = models.Stage1("", stage1_config, stage1_model, shapes)
  model = models.get("latent_flow").build(configs.get_config("latent_flow", preset="1m"), stage1)
  prior = _trained_params(model) - _trained_params(stage1_model)  # Its autoguidance guide too.
  assert 130_000 <= prior <= 160_000, prior


def test_unknown_preset_is_one_clear_error():
  with pytest.raises(ValueError, match=r"--preset=2m is not a preset of 'vae' \(its presets: 1m, iwae_1layer\)"):
    configs.get_config("vae", preset="2m")


@pytest.mark.slow
def test_budget_checks_every_config_before_any_training(tmp_path):
  root = tmp_path / "budget"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.budget", f"--root={root}", "--families=ae,latent_flow",
       "--num_epochs=1", "--train_size=256"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --train_size=256 is smaller than --batch_size=512"]
  assert not (root / "ae").exists()


@pytest.mark.slow
def test_budget_trains_evaluates_and_writes_the_table(tmp_path):
  root = tmp_path / "budget"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.budget", f"--root={root}",
       "--families=ae,latent_flow", "--num_epochs=1", "--train_size=512", "--test_size=200",
       "--eval_samples=300", "--log_every=4"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((root / "budget.json").read_text())["results"]
  assert set(results) == {"ae", "latent_flow"}
  stage1 = json.loads((root / "conv_vae" / "eval.json").read_text())
  prior = json.loads((root / "latent_flow" / "eval.json").read_text())
  # The prior row's time is stage 1's plus the prior's; its count includes stage 1's parameters.
  assert results["latent_flow"]["train_seconds"] == pytest.approx(
      stage1["train_seconds"] + prior["train_seconds"], abs=0.02)
  assert results["latent_flow"]["num_params"] == prior["num_params"] > stage1["num_params"]
  for name, r in results.items():
    assert np.isfinite(r["fid_samples"]) and np.isfinite(r["fid_reconstructions"])
    # The latent flow's small prior and guide (0.15 M) come on top of its 1 M stage 1 (conv_vae).
    budget = 1_000_000 + (150_000 if name == "latent_flow" else 0)
    assert abs(r["num_params"] - budget) <= 30_000
  table = (root / "budget.md").read_text()
  assert "| ae | 999,004 | 1 |" in table and "| latent_flow | " in table
