"""The latent flow-matching prior over a trained encoder family (models/latent_flow.py).

(Training, bitwise resume and the sampler are covered for every family by test_families.py.)"""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from mnistgen_jax import configs, flow, train_setup, trainer
from mnistgen_jax import runs as runs_lib  # (`runs` is this file's fixture of trained runs)
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import latent_flow



def _quiet(*args):
  del args


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Tiny finished stage-1 runs (ae, cond_vae) and latent flows over them."""
  root = tmp_path_factory.mktemp("latent_flow")
  for name in ("ae", "cond_vae"):
    trainer.train_and_evaluate(tiny_config(name, num_epochs=1), str(root / name), print_fn=_quiet)
    trainer.train_and_evaluate(
        tiny_config("latent_flow", stage1_workdir=str(root / name), num_epochs=2,
                    sample_steps=4),
        str(root / f"{name}_flow"), print_fn=_quiet)
  return root


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_stage1_stays_frozen_and_codes_are_standardised_by_the_first_batch(runs):
  _, _, _, stage1 = runs_lib.restore_run(str(runs / "ae"))
  config, _, model, state = runs_lib.restore_run(str(runs / "ae_flow"))
  assert state.step == 8 and not model.conditional
  # Every stage-1 collection is inside the checkpoint, bit for bit as trained in stage 1.
  assert _leaves_equal(state.params["stage1"], stage1.params)
  assert _leaves_equal(state.model_state["prior"]["stage1"], stage1.model_state["prior"])
  # The standardisation: moments of the first training batch's codes, then fixed.
  (train_x, train_y), _ = train_setup.load_data(config)
  keys = train_lib.root_keys(config.train.seed)
  first = np.asarray(train_lib.epoch_batches(keys["data"], 0, len(train_x),
                                             config.train.batch_size))[0]
  codes = model.apply(state.variables(), train_lib.to_float(train_x[first]), train_y[first],
                      method="encode")
  stats = state.model_state["code_stats"]
  np.testing.assert_allclose(stats["mean"], codes.mean(0), rtol=1e-5, atol=1e-6)
  scale = np.asarray(stats["scale_tril"])
  np.testing.assert_allclose(np.diag(scale), codes.std(0), rtol=1e-4)
  np.testing.assert_array_equal(scale,
                                np.diag(np.diag(scale)))  # config.model.code_whitening=diagonal
  assert np.abs(np.diag(scale) - 1).max() > 0.05  # Not the identity it starts from.


def test_full_whitening_is_the_cholesky_factor_of_the_code_covariance():
  codes = jax.random.normal(jax.random.PRNGKey(0), (4096, 3)) @ jnp.array(
      [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, -1.0, 0.1]]).T + 3.0
  scale = np.asarray(latent_flow.code_scale(codes, "full"))
  centred = np.asarray(codes - codes.mean(0))
  np.testing.assert_allclose(scale @ scale.T, centred.T @ centred / len(centred), rtol=1e-4,
                             atol=1e-5)
  assert np.allclose(np.triu(scale, 1), 0) and np.all(np.diag(scale) > 0)
  white = np.linalg.solve(scale, centred.T).T  # What the prior is trained on: identity covariance.
  np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(3), atol=1e-3)
  diagonal = np.asarray(latent_flow.code_scale(codes, "diagonal"))
  np.testing.assert_allclose(np.diag(diagonal), centred.std(0), rtol=1e-4)


@pytest.mark.slow
def test_sampling_uses_the_moving_average_of_the_velocity_weights(runs):
  _, _, model, state = runs_lib.restore_run(str(runs / "ae_flow"))
  variables = state.variables()
  ema, live = variables["ema"]["velocity"], variables["params"]["velocity"]
  assert not _leaves_equal(ema, live)
  assert not _leaves_equal(variables["ema"]["guide"], variables["params"]["guide"])
  # After 8 steps of warm-up decay, the average lies between the initial and the trained weights.
  labels, key = jnp.zeros(4, jnp.int32), jax.random.PRNGKey(0)
  sample = lambda v: np.asarray(model.apply(v, labels, method="sample_codes", rngs={"sample": key}))
  without = {k: v for k, v in variables.items() if k != "ema"}
  assert np.abs(sample(variables) - sample(without)).max() > 1e-4
  swapped = {**without, "params": {**variables["params"], **variables["ema"]}}
  np.testing.assert_allclose(sample(variables), sample(swapped), atol=1e-6)
  images = model.apply(variables, labels, method="sample", rngs={"sample": key})
  assert images.shape == (4, 28, 28, 1) and 0 <= float(images.min()) <= float(images.max()) <= 1


@pytest.mark.slow
def test_a_conditional_stage1_gets_a_guided_conditional_prior(runs):
  config, _, model, state = runs_lib.restore_run(str(runs / "cond_vae_flow"))
  assert model.conditional and model.guidance == 1.0
  key = jax.random.PRNGKey(0)
  codes = lambda m, y: np.asarray(m.apply(state.variables(), y, method="sample_codes",
                                          rngs={"sample": key}))
  threes, sevens = jnp.full(8, 3, jnp.int32), jnp.full(8, 7, jnp.int32)
  assert np.abs(codes(model, threes) - codes(model, sevens)).max() > 1e-4  # The label matters.
  guided = model.clone(guidance=3.0)
  assert np.abs(codes(guided, threes) - codes(model, threes)).max() > 1e-4
  # Guidance 0 is the unconditional velocity: the requested digit no longer changes the codes.
  free = model.clone(guidance=0.0)
  np.testing.assert_allclose(codes(free, threes), codes(free, sevens), atol=1e-6)


@pytest.mark.slow
def test_the_guide_trains_beside_the_prior_and_leaves_it_as_it_would_be_alone(runs, tmp_path):
  """Autoguidance's guide network: trained on the same targets, its loss reported apart, and
  the prior's weights the same as a run without a guide (the summed loss has disjoint
  gradients)."""
  config = tiny_config("latent_flow", stage1_workdir=str(runs / "ae"), num_epochs=2,
                       sample_steps=4, guide_width=0, autoguidance=1.0)
  trainer.train_and_evaluate(config, str(tmp_path / "alone"), print_fn=_quiet)
  _, _, _, alone = runs_lib.restore_run(str(tmp_path / "alone"))
  _, _, model, guided = runs_lib.restore_run(str(runs / "ae_flow"))
  assert "guide" not in alone.params and model.guide_width == 16
  for name in ("params", "ema"):
    prior = lambda state: state.variables()[name]["velocity"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 prior(alone), prior(guided))
  saved = runs_lib.load_config(str(runs / "ae_flow"))
  family, module, stage1 = runs_lib.build(saved)
  _, first = train_setup.initial_state(family, module, saved, 0, stage1)
  assert not _leaves_equal(first.params["guide"], guided.params["guide"])  # It trained.
  test = runs_lib.read_eval_json(str(runs / "ae_flow"))["test"]
  np.testing.assert_allclose(test["velocity_mse"], test["prior_mse"] + test["guide_mse"], rtol=1e-5)
  assert test["guide_mse"] > test["prior_mse"] > 0  # The smaller network fits worse.


@pytest.mark.slow
def test_autoguided_sampling_integrates_the_extrapolated_field(runs):
  """sample_codes against the ODE integrated by hand over v_guide + w (v_prior - v_guide), with
  the EMA weights of both networks and the module's own noise."""
  _, _, model, state = runs_lib.restore_run(str(runs / "ae_flow"))
  variables = state.variables()
  assert model.autoguidance == 2.0  # The default.
  labels, key = jnp.zeros(6, jnp.int32), jax.random.PRNGKey(0)
  codes = lambda m, v: m.apply(v, labels, method="sample_codes", rngs={"sample": key})
  # Zero-output networks (their last layer is zero) leave the module's noise where it started.
  zeroed = {**variables, "ema": jax.tree.map(jnp.zeros_like, variables["ema"])}
  noise = model.apply(variables, codes(model, zeroed), method="standardise")
  prior = latent_flow.VelocityMLP(model.code_dim, model.width, model.layers)
  guide = latent_flow.VelocityMLP(model.code_dim, model.guide_width, model.guide_layers)

  def field(w):
    def v(z, t):
      v_guide = guide.apply({"params": variables["ema"]["guide"]}, z, t, labels)
      v_prior = prior.apply({"params": variables["ema"]["velocity"]}, z, t, labels)
      return v_guide + w * (v_prior - v_guide)
    return v

  stats = variables["code_stats"]
  for w in (2.0, 1.0, 0.0):
    by_hand = (flow.integrate(field(w), noise, model.sample_steps, model.solver)
               @ stats["scale_tril"].T + stats["mean"])
    np.testing.assert_allclose(codes(model.clone(autoguidance=w), variables), by_hand,
                               rtol=1e-4, atol=1e-5)
  assert np.abs(codes(model, variables) - codes(model.clone(autoguidance=1.0), variables)).max() > 1e-3


def test_runs_saved_before_autoguidance_have_no_guide_and_refuse_the_flag():
  saved = {"model": "latent_flow",  # the flat layout of those runs
           **configs.fields(json.loads(configs.get_config("latent_flow").to_json()))}
  for name in ("guide_width", "guide_layers", "autoguidance"):
    saved.pop(name)
  config = configs.from_saved(saved)
  assert config.model.guide_width == 0 and config.sampling.autoguidance == 1.0
  config.sampling.autoguidance = 2.0
  with pytest.raises(ValueError, match=r"--autoguidance=2.0 needs a guide network, which this "
                     r"run has not \(--guide_width=0\); pass --autoguidance=1"):
    configs.validate(config)


def _interrupted_copy(source, target):
  """A copy of a finished run, resumed for more epochs and stopped at once (as by Ctrl-C)."""
  shutil.copytree(source, target)
  config = tiny_config("ae", num_epochs=3)

  def stop(line):
    if line.startswith("step"):
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, str(target), print_fn=stop)


@pytest.mark.slow
def test_bad_stage1_workdirs_are_refused_before_anything_is_written(runs, tmp_path):
  fake = tmp_path / "fake"
  fake.mkdir()
  cases = {str(tmp_path / "missing"): "holds no run (no config.json)",
           str(runs / "ae_flow"): "holds a 'latent_flow' run, which latent_flow cannot build on",
           str(fake): "was trained on 'fashion_mnist', this run is on 'mnist'"}
  with open(fake / "config.json", "w") as f:
    saved = json.load(open(runs / "ae" / "config.json"))
    json.dump({**saved, "data": {**saved["data"], "dataset": "fashion_mnist"}}, f)
  _interrupted_copy(runs / "ae", tmp_path / "unfinished")
  cases[str(tmp_path / "unfinished")] = "holds an unfinished run (its latest checkpoint, step 4"
  # A damaged stage 1 is named as the stage 1, with the flag that replaces it.
  shutil.copytree(runs / "ae", tmp_path / "bad_config")
  (tmp_path / "bad_config" / "config.json").write_text("{}")
  cases[str(tmp_path / "bad_config")] = (
      f"stage 1 at {tmp_path / 'bad_config'}: {tmp_path / 'bad_config' / 'config.json'} names no "
      "model; pass another --stage1_workdir")
  shutil.copytree(runs / "ae", tmp_path / "no_digests")
  os.remove(tmp_path / "no_digests" / "checkpoint_digests.json")
  cases[str(tmp_path / "no_digests")] = f"stage 1 at {tmp_path / 'no_digests'}: "
  for stage1, message in cases.items():
    workdir = tmp_path / "flow"
    with pytest.raises(ValueError, match=re.escape(message)):
      trainer.train_and_evaluate(tiny_config("latent_flow", stage1_workdir=stage1), str(workdir),
                                 print_fn=_quiet)
    assert not workdir.exists()
  # From the command line: one line naming the problem and the fix, exit 1, nothing written.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--model=latent_flow",
       f"--stage1_workdir={tmp_path / 'unfinished'}", f"--workdir={tmp_path / 'flow'}"],
      cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: --stage1_workdir={tmp_path / 'unfinished'} holds an unfinished run (its latest "
      "checkpoint, step 4, is not the end of its 3 epochs); finish it first: mnistgen-train "
      f"--workdir={tmp_path / 'unfinished'} resumes it"]
  assert not (tmp_path / "flow").exists()


@pytest.mark.slow  # Its fixture trains four runs end to end.
def test_evaluation_results_name_the_velocity_loss(runs):
  results = runs_lib.read_eval_json(str(runs / "cond_vae_flow"))
  assert results["loss_name"] == "velocity_mse" and results["epochs"] == 2
  assert 0 < results["test"]["velocity_mse"] < 10


@pytest.mark.slow
def test_the_step_reads_codes_encoded_once_and_matches_the_loss_on_images(runs):
  config, family, model, state = runs_lib.restore_run(str(runs / "cond_vae_flow"))
  variables = state.variables()
  (train_x, train_y), _ = train_setup.load_data(config)
  inputs = family.training.train_inputs(model, config, variables, train_x, train_y)
  # One code per training image (its posterior mean), batch by batch as encode gives it.
  assert inputs.shape == (len(train_x), model.code_dim) and inputs.dtype == jnp.float32
  x, y = train_lib.to_float(jnp.asarray(train_x[:16])), jnp.asarray(train_y[:16])
  np.testing.assert_allclose(inputs[:16], model.apply(variables, x, y, method="encode"),
                             rtol=1e-5, atol=1e-5)
  # The loss the step optimises on those codes is the loss of the images (same randomness),
  # and the test evaluation, which reads images, scores the same objective.
  rngs = {"sample": jax.random.PRNGKey(3)}
  on_codes = model.apply(variables, inputs[:16], y, method="code_losses", rngs=rngs)["loss"]
  on_images = model.apply(variables, x, y, method="losses", rngs=rngs)["loss"]
  np.testing.assert_allclose(on_codes, on_images, rtol=1e-4, atol=1e-5)
  assert on_codes.shape == (16,) and float(on_codes.mean()) > 0
  # And the chunk runner hands float inputs to the step unchanged (uint8 images are scaled).
  step = lambda s, batch, labels: (s, {"loss": batch.sum()})
  run = train_lib.make_chunk_runner(model, None, step)
  _, metrics = run(state, inputs, jnp.asarray(train_y), jnp.arange(32).reshape(2, 16), 0, 1)
  np.testing.assert_allclose(metrics["loss"][0], inputs[:16].sum(), rtol=1e-5)


@pytest.mark.slow
def test_standardising_inverts_the_code_scale_for_either_whitening(runs):
  _, _, model, state = runs_lib.restore_run(str(runs / "ae_flow"))
  codes = jax.random.normal(jax.random.PRNGKey(1), (64, model.code_dim)) * 2.0 + 1.0
  mean = jnp.ones(model.code_dim)
  for whitening in ("full", "diagonal"):
    scale = latent_flow.code_scale(codes, whitening)
    variables = {**state.variables(), "code_stats": {"mean": mean, "scale_tril": scale}}
    z = model.clone(code_whitening=whitening).apply(variables, codes, method="standardise")
    np.testing.assert_allclose(z, np.linalg.solve(scale, np.asarray(codes - mean).T).T,
                               rtol=1e-4, atol=1e-4)
  assert np.abs(np.tril(np.asarray(latent_flow.code_scale(codes, "full")), -1)).max() > 0


@pytest.mark.slow
def test_prior_floor_decodes_training_codes_and_refuses_runs_without_codes(runs):
  command = [sys.executable, "-m", "experiments.prior_floor", "--num=300", "--sigmas=0,0.5"]
  proc = subprocess.run(command + [f"--workdir={runs / 'ae'}"], cwd=ROOT, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr
  fids = [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines() if "fid_lenet" in line]
  assert len(fids) == 2 and fids[0] != fids[1]
  # sigma 0 is the FID of the training images' own reconstructions (decoded exact codes).
  from mnistgen_jax import data, viz
  from mnistgen_jax import evaluation
  config, _, model, state = runs_lib.restore_run(str(runs / "ae"))
  images, labels = data.load("mnist", "train", limit=300)
  recon = train_lib.make_applier(model, "reconstruct", 100)(state.variables(), images, labels)
  fid = evaluation.Reference.load("mnist", progress=False).fid(viz.to_uint8(recon), "recon")
  assert abs(fids[0] - fid) < 0.02, (fids[0], fid)
  proc = subprocess.run(command + [f"--workdir={runs / 'missing'}"], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
  assert proc.stderr.startswith("error: ")


@pytest.mark.slow
def test_sampling_curve_scores_each_setting_as_evaluate_does(runs):
  workdir = runs / "cond_vae_flow"
  command = [sys.executable, "-m", "experiments.sampling_curve", "--num_samples=200",
             "--progress=false"]
  proc = subprocess.run(command + [f"--workdir={workdir}", "--steps=1,3", "--solvers=euler,heun",
                                   "--name=curve_test"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  with open(workdir / "curve_test.json") as f:
    rows = json.load(f)["rows"]
  assert [(r["solver"], r["steps"], r["network evals"]) for r in rows] == [
      ("euler", 1, 1), ("euler", 3, 3), ("heun", 1, 2), ("heun", 3, 6)]
  assert all(r["samples/s"] > 0 and 0 <= r["label_accuracy"] <= 1 for r in rows)
  assert len({r["fid_lenet"] for r in rows}) == 4  # each setting draws its own samples
  assert "| heun | 3 | 6 |" in (workdir / "curve_test.md").read_text()
  assert (workdir / "curve_test.png").stat().st_size > 0
  # A row holds what experiments.evaluate reports for the same settings: same keys, same samples.
  from mnistgen_jax import evaluation
  config = runs_lib.load_config(str(workdir))
  config.sampling.solver, config.sampling.sample_steps = "heun", 3
  config, _, model, state = runs_lib.restore_run(str(workdir), config=config)
  expected = evaluation.evaluate_variables(config, model, state.variables(), 200, 0, False,
                                         evaluation.Reference.load("mnist", progress=False))
  assert rows[3]["fid_lenet"] == pytest.approx(expected["samples"]["fid_lenet"], rel=1e-6)
  assert rows[3]["label_accuracy"] == expected["samples"]["label_accuracy"]
  for args in ([f"--workdir={runs / 'ae'}"], [f"--workdir={workdir}", "--steps=0,4"]):
    proc = subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
