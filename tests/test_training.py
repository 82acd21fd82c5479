import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_config
from mnistgen_jax import checkpoint, configs, cpu_compiler, models, runs, train_setup, trainer
from mnistgen_jax import train as train_lib



def _params(workdir, step=None):
  return runs.restore_run(workdir, step)[3].params


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _quiet(*args):
  del args


@pytest.mark.slow
def test_run_writes_outputs_and_is_deterministic(tmp_path):
  config = tiny_config("vae", latent_dim=2)
  result = trainer.train_and_evaluate(config, str(tmp_path / "a"), print_fn=_quiet)
  trainer.train_and_evaluate(config, str(tmp_path / "b"), print_fn=_quiet)
  _assert_trees_equal(_params(tmp_path / "a"), _params(tmp_path / "b"))

  a = tmp_path / "a"
  for name in ("reconstructions.png", "samples.png", "latent.png", "curves.png"):
    assert (a / name).stat().st_size > 1000, name
  assert json.loads((a / "config.json").read_text()) == json.loads(config.to_json())
  assert Image.open(a / "samples.png").size == (2 * (4 * 30 + 2),) * 2  # 16 samples, 4x4 grid
  assert Image.open(a / "reconstructions.png").size == (2 * (16 * 30 + 2), 2 * (2 * 30 + 2))
  saved = json.loads((a / "eval.json").read_text())
  assert saved == json.loads(json.dumps(result))
  assert saved["step"] == 8 and set(saved["test"]) == {"neg_elbo", "recon", "kl"}
  np.testing.assert_allclose(saved["test"]["neg_elbo"],
                             saved["test"]["recon"] + saved["test"]["kl"], rtol=1e-5)
  records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))
  assert [r["step"] for r in records if r["split"] == "test"] == [4, 8]
  assert sorted(os.listdir(a / "checkpoints")) == ["4", "8"]


@pytest.mark.slow
def test_different_seed_gives_different_params(tmp_path):
  trainer.train_and_evaluate(tiny_config("ae", num_epochs=1), str(tmp_path / "a"), print_fn=_quiet)
  trainer.train_and_evaluate(tiny_config("ae", num_epochs=1, seed=1), str(tmp_path / "b"),
                             print_fn=_quiet)
  a, b = jax.tree.leaves(_params(tmp_path / "a")), jax.tree.leaves(_params(tmp_path / "b"))
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ae", "cond_vae"])
def test_resume_equals_uninterrupted_run(name, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trainer.train_and_evaluate(tiny_config(name, num_epochs=2), straight, print_fn=_quiet)
  trainer.train_and_evaluate(tiny_config(name, num_epochs=1), resumed, print_fn=_quiet)
  lines = []
  trainer.train_and_evaluate(tiny_config(name, num_epochs=2), resumed, print_fn=lines.append)
  assert lines[0].startswith("resumed from") and "at step 4" in lines[0]
  _assert_trees_equal(_params(straight), _params(resumed))
  with open(os.path.join(resumed, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if '"train"' in line]
  assert steps == list(range(1, 9))


@pytest.mark.slow
def test_resume_from_the_middle_of_an_epoch(tmp_path):
  """Checkpoints every 3 steps; drop those after step 6 (mid epoch 2) and resume from it."""
  config = tiny_config("vae", num_epochs=3, checkpoint_every_steps=3, keep_checkpoints=10)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trainer.train_and_evaluate(config, straight, print_fn=_quiet)
  shutil.copytree(straight, resumed)
  for step in os.listdir(os.path.join(resumed, "checkpoints")):
    if int(step) > 6:
      shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  lines = []
  trainer.train_and_evaluate(config, resumed, print_fn=lines.append)
  assert "at step 6" in lines[0]
  _assert_trees_equal(_params(straight), _params(resumed))


@pytest.mark.slow
def test_checkpoints_keep_the_last_k_and_the_best(tmp_path):
  config = tiny_config("vae", num_epochs=5, keep_checkpoints=2)
  trainer.train_and_evaluate(config, str(tmp_path), print_fn=_quiet)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  test_loss = {r["step"]: r["loss"] for r in records if r["split"] == "test"}
  best = min(test_loss, key=test_loss.get)
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
  assert kept == sorted({16, 20, best})


@pytest.mark.slow
def test_workdir_of_another_run_is_refused_untouched(tmp_path):
  trainer.train_and_evaluate(tiny_config("ae", num_epochs=2), str(tmp_path / "ae"),
                             print_fn=_quiet)
  trainer.train_and_evaluate(tiny_config("ae", num_epochs=1, lr_schedule="cosine"),
                             str(tmp_path / "cosine"), print_fn=_quiet)
  mtimes = lambda: {os.path.join(d, p): os.path.getmtime(os.path.join(d, p))
                    for d, _, fs in os.walk(tmp_path) for p in fs
                    if p != runs.LOCK_FILE}  # It records the latest process that held the workdir.
  before = mtimes()
  refusals = [  # (workdir, config, message)
      ("ae", tiny_config("vae", num_epochs=2), "holds a 'ae' run, not 'vae'"),
      ("ae", tiny_config("ae", num_epochs=2, latent_dim=8), "trained with latent_dim=4 .now 8."),
      # The test loss's noise is keyed per evaluation batch: a run keeps its batch size.
      ("ae", tiny_config("ae", num_epochs=2, eval_batch_size=50),
       "trained with eval_batch_size=100 .now 50."),
      ("ae", tiny_config("ae", num_epochs=1), "has already trained 8 steps .2 epochs., more than "
       "--num_epochs=1: pass --num_epochs=2 .or more. to resume it"),
      # A longer cosine schedule would differ from a straight run's at every step (a constant
      # rate resumes bit-identically: test_resume_equals_uninterrupted_run).
      ("cosine", tiny_config("ae", num_epochs=2, lr_schedule="cosine"),
       "trained with --lr_schedule=cosine over --num_epochs=1, .* resuming with --num_epochs=2 "
       "would match no straight run: pass --num_epochs=1, or train the longer run in another"),
  ]
  for workdir, config, message in refusals:
    with pytest.raises(checkpoint.CheckpointError, match=message):
      trainer.train_and_evaluate(config, str(tmp_path / workdir), print_fn=_quiet)
  assert mtimes() == before
  assert (tmp_path / "ae" / runs.LOCK_FILE).exists()


@pytest.mark.parametrize("overrides,message", [
    (dict(batch_size=0), "--batch_size must be a positive integer, got 0"),
    (dict(latent_dim=0), "--latent_dim must be a positive integer, got 0"),
    (dict(learning_rate=-1.0), r"--learning_rate must be in \(0, 1\], got -1.0"),
    (dict(arch="resnet"), "--arch='resnet' is unknown"),
    (dict(dataset="cifar"), "--dataset='cifar' is unknown"),
    (dict(channels="8,16,32"), "--channels must be 1 or 2"),
    (dict(train_size=10, batch_size=64), "--train_size=10 is smaller than --batch_size=64"),
    (dict(nonsense=1), "unknown config field 'nonsense'"),
])
def test_bad_config_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    configs.get_config("vae", **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--model=gan"], "error: unknown model 'gan'; choose one of: " + ", ".join(models.names())),
    (["--batch_size=-3"], "error: --batch_size must be a positive integer, got -3"),
    (["--batch_size=100000"], "error: --batch_size=100000 is larger than the 60,000 training "
     "images of mnist: pass a smaller --batch_size"),
])
def test_binary_bad_input_is_one_clear_line(args, message, tmp_path):
  workdir = tmp_path / "w"
  proc = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == message
  assert not workdir.exists()  # Nothing written.


@pytest.mark.slow
def test_binary_trains_a_tiny_run(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--model=cond_vae", f"--workdir={tmp_path}",
       "--num_epochs=1", "--train_size=256", "--test_size=100", "--batch_size=64",
       "--hidden=32", "--channels=8", "--log_every=2", "--noevaluate"],
      cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "img/s | ETA" in proc.stdout and "done: 4 steps" in proc.stdout
  # The fields that differ from the family's defaults, as flags, before the first step.
  config_line = next(line for line in proc.stdout.splitlines() if line.startswith("config: "))
  assert "--hidden=32" in config_line and "--channels=8" in config_line
  assert "--batch_size=64" in config_line
  assert config_line.endswith(f"the rest cond_vae's defaults (all of it: {tmp_path}/config.json)")
  assert "--latent_dim" not in config_line  # a default, not listed
  assert Image.open(tmp_path / "samples.png").size == (2 * (10 * 30 + 2),) * 2  # 10x10 digits


@pytest.mark.parametrize("steps,log_every,expected", [
    (468, 100, 78),   # MNIST at batch 128: 6 chunks of 78, one compiled shape.
    (468, 117, 117),
    (4, 3, 2),
    (97, 10, 10),     # A prime epoch: no divisor near 10, chunks of 10 and one of 7.
    (5, 100, 5),
])
def test_chunk_length(steps, log_every, expected):
  assert train_lib.chunk_length(steps, log_every) == expected


def _primitives(jaxpr) -> set:
  """Names of every primitive in a closed jaxpr, sub-jaxprs (scan bodies, pjit) included."""
  names = set()
  for eqn in jaxpr.jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          names |= _primitives(sub)
  return names


def _conv_vae_setup(mnist_slice, **overrides):
  config = tiny_config("conv_vae", **overrides)
  family, model, stage1 = runs.build(config)
  tx, state = train_setup.initial_state(family, model, config, 8, stage1)
  images, labels = map(jax.numpy.asarray, mnist_slice)
  batches = train_lib.epoch_batches(jax.random.PRNGKey(0), 0, len(images), config.train.batch_size)
  return model, tx, state, images, labels, batches


@pytest.mark.slow
def test_steps_loop_equals_the_scanned_loop(mnist_slice):
  model, tx, state, images, labels, batches = _conv_vae_setup(mnist_slice)
  copy = lambda: jax.tree.map(jax.numpy.copy, state)  # The runners donate their state.
  results = {loop: train_lib.make_chunk_runner(cpu_compiler.for_scanned_step(model, loop), tx,
                                               loop=loop)(copy(), images, labels, batches, 1, 3)
             for loop in train_lib.TRAIN_LOOPS}
  (scan_state, scan_metrics), (steps_state, steps_metrics) = (results["scan"], results["steps"])
  assert int(scan_state.step) == int(steps_state.step) == 3
  # Per-step metrics stacked alike; the two convolution implementations round differently.
  assert jax.tree.map(np.shape, scan_metrics) == jax.tree.map(np.shape, steps_metrics)
  assert scan_metrics["loss"].shape == (3,)
  for a, b in zip(jax.tree.leaves((scan_metrics, scan_state.params)),
                  jax.tree.leaves((steps_metrics, steps_state.params))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  # The loss went down over the three steps of either loop (real digits, lr 1e-3).
  assert steps_metrics["loss"][-1] < steps_metrics["loss"][0]


@pytest.mark.slow
def test_convolutions_are_patches_only_in_a_scanned_step_on_cpu(mnist_slice):
  model, tx, state, images, labels, batches = _conv_vae_setup(mnist_slice)
  step = train_lib.make_train_step(model, tx)
  x = train_lib.to_float(images[:8])
  native = _primitives(jax.make_jaxpr(step)(state, x, labels[:8]))
  assert "conv_general_dilated" in native  # Outside the scan: the native convolution.
  step_model = cpu_compiler.for_scanned_step(model, "scan")
  assert step_model.conv_choice.scanned_step and not model.conv_choice.scanned_step
  assert cpu_compiler.for_scanned_step(model, "steps") is model
  scanned = _primitives(jax.make_jaxpr(
      train_lib.make_chunk_runner(step_model, tx), static_argnums=5)(
          state, images, labels, batches, 0, 2))
  assert "scan" in scanned
  on_cpu = jax.default_backend() == "cpu"
  assert ("conv_general_dilated" in scanned) == (not on_cpu)
  # The module as built (evaluation, pictures) keeps the native convolution in a scan too.
  plain = _primitives(jax.make_jaxpr(
      train_lib.make_chunk_runner(model, tx), static_argnums=5)(
          state, images, labels, batches, 0, 2))
  assert "conv_general_dilated" in plain


def test_unknown_train_loop_is_refused():
  with pytest.raises(ValueError, match="--train_loop='unrolled' is unknown"):
    configs.get_config("vae", train_loop="unrolled")


def test_metrics_log_keeps_every_step_on_disk_and_a_thinned_curve_in_memory(tmp_path):
  """A long run's per-step records (9.8 M for the IWAE paper's schedule) stay in the file, not in
  memory: the curves get at most curve_points train records (every 2^j-th step) and every test
  record; a resume keeps the file's lines up to its step and thins them the same way."""
  log = runs.MetricsLog(str(tmp_path), 0, curve_points=100)
  for step in range(1, 1001):
    records = [{"step": step, "epoch": 1 + (step - 1) // 250, "split": "train",
                "train_seconds": step / 10, "loss": 1000.0 - step}]
    if step % 250 == 0:
      records.append({"step": step, "epoch": step // 250, "split": "test",
                      "train_seconds": step / 10, "loss": 900.0 - step})
    log.write(records)
  log.close()
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 1004 and [r["step"] for r in lines if r["split"] == "train"] == list(
      range(1, 1001))
  train = [r for r in log.records if r["split"] == "train"]
  test = [r for r in log.records if r["split"] == "test"]
  assert log.stride == 16 and len(train) == 62  # 1000 // 16; the stride doubled 4 times
  assert [r["step"] for r in train] == list(range(16, 1001, 16))
  assert [r["step"] for r in test] == [250, 500, 750, 1000]
  assert log.train_seconds() == 100.0

  resumed = runs.MetricsLog(str(tmp_path), 500, curve_points=100)
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 502 and max(r["step"] for r in lines) == 500
  assert [r["step"] for r in resumed.records if r["split"] == "test"] == [250, 500]
  assert resumed.stride == 8 and max(r["step"] for r in resumed.records) == 500
  assert resumed.train_seconds() == 50.0
  resumed.close()
