import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, keep_every_compilation, tiny_config
from mnistgen_jax import trainer
from mnistgen_jax import runs as runs_lib  # (`runs` is this file's fixture of trained runs)

# End-to-end: every test here trains or restores whole runs (pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  for name in ("cond_vae", "ae"):
    trainer.train_and_evaluate(tiny_config(name, num_epochs=1), str(root / name),
                               print_fn=lambda *a: None)
  # A flow prior over the conditional VAE: its sampler holds an ODE solver and guidance.
  trainer.train_and_evaluate(
      tiny_config("latent_flow", stage1_workdir=str(root / "cond_vae"), num_epochs=1,
                  sample_steps=3), str(root / "latent_flow"), print_fn=lambda *a: None)
  return root


def _generate(*args, env=None):
  return subprocess.run([sys.executable, "-m", "experiments.generate", *args], cwd=ROOT,
                        capture_output=True, text=True, env=env)


def test_generate_a_digit_as_png_and_npy(runs, tmp_path):
  out, npy, cache = tmp_path / "d.png", tmp_path / "d.npy", tmp_path / "xla"
  keep_all = keep_every_compilation()  # Even what compiles fast.
  proc = _generate(f"--workdir={runs / 'cond_vae'}", "--num=12", "--digit=3", f"--out={out}",
                   f"--npy={npy}", "--seed=1", f"--compilation_cache={cache}",
                   env=keep_all)
  assert proc.returncode == 0, proc.stderr[-2000:]
  images = np.load(npy)
  assert images.shape == (12, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.load(tmp_path / "d_labels.npy"), [3] * 12)
  assert Image.open(out).size == (2 * (4 * 30 + 2), 2 * (3 * 30 + 2))  # 4 columns, 3 rows
  again = tmp_path / "again.npy"
  compiled = sorted(os.listdir(cache))
  assert any(f.endswith("-cache") for f in compiled), compiled
  _generate(f"--workdir={runs / 'cond_vae'}", "--num=12", "--digit=3", f"--out={out}",
            f"--npy={again}", "--seed=1", f"--compilation_cache={cache}",
            env=keep_all)
  # Same seed, same digits, from the sampler read back from the compilation cache.
  np.testing.assert_array_equal(images, np.load(again))
  assert sorted(os.listdir(cache)) == compiled  # nothing compiled anew


def test_plain_autoencoder_samples_through_its_fitted_prior(runs, tmp_path):
  proc = _generate(f"--workdir={runs / 'ae'}", "--num=5", f"--out={tmp_path / 'a.png'}",
                   f"--npy={tmp_path / 'a.npy'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  images = np.load(tmp_path / "a.npy")
  assert images.shape == (5, 28, 28) and images.std() > 0
  assert not (tmp_path / "a_labels.npy").exists()  # unconditional: no labels


def test_a_flow_prior_draws_a_digit_with_other_sampling_settings(runs, tmp_path):
  config_before = (runs / "latent_flow" / "config.json").read_text()
  drawn = {}
  for name, extra in (("own", []), ("other", ["--guidance=3", "--solver=euler",
                                               "--sample_steps=6"])):
    npy = tmp_path / f"{name}.npy"
    proc = _generate(f"--workdir={runs / 'latent_flow'}", "--num=6", "--digit=4",
                     f"--out={tmp_path / name}.png", f"--npy={npy}", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    drawn[name] = np.load(npy)
  assert drawn["own"].shape == drawn["other"].shape == (6, 28, 28)
  assert np.abs(drawn["own"].astype(int) - drawn["other"]).max() > 0
  assert (runs / "latent_flow" / "config.json").read_text() == config_before  # Not retrained.


def test_npz_holds_images_and_labels_in_the_order_asked(runs, tmp_path):
  drawn, grouped = tmp_path / "drawn.npz", tmp_path / "grouped.npz"
  for path, order, batch in ((drawn, "drawn", 1000), (grouped, "by_digit", 1000)):
    proc = _generate(f"--workdir={runs / 'cond_vae'}", "--num=25", f"--npy={path}",
                     f"--order={order}", f"--batch_size={batch}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote 25 samples of cond_vae ({order} order) to {path}\n" == proc.stdout
  assert sorted(os.listdir(tmp_path)) == ["drawn.npz", "grouped.npz"]  # no PNG unless asked
  with np.load(drawn) as a, np.load(grouped) as b:
    assert a["images"].shape == (25, 28, 28) and a["images"].dtype == np.uint8
    np.testing.assert_array_equal(a["labels"], np.arange(25) % 10)
    order = np.argsort(a["labels"], kind="stable")
    np.testing.assert_array_equal(b["labels"], np.sort(a["labels"]))
    np.testing.assert_array_equal(b["images"], a["images"][order])  # the same draws, regrouped


def test_the_grid_is_capped_and_the_file_written_in_batches(runs, tmp_path):
  npy, out = tmp_path / "many.npy", tmp_path / "grid.png"
  proc = _generate(f"--workdir={runs / 'ae'}", "--num=450", f"--npy={npy}", f"--out={out}",
                   "--batch_size=64")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"{out} shows the first 400 of the 450 samples (the grid's cap)" in proc.stdout
  images = np.load(npy)
  assert images.shape == (450, 28, 28) and images[-10:].std() > 0  # the short last batch too
  assert Image.open(out).size == (2 * (20 * 30 + 2), 2 * (20 * 30 + 2))  # 20 x 20
  grid = np.asarray(Image.open(out))[::2, ::2]  # back to one pixel per pixel
  np.testing.assert_array_equal(grid[2:30, 2:30], images[0])
  np.testing.assert_array_equal(grid[2 + 19 * 30:30 + 19 * 30, 2 + 19 * 30:30 + 19 * 30],
                                images[399])
  assert "sampling" in proc.stderr  # progress, as plain lines off a terminal


@pytest.mark.parametrize("args,message", [
    (["--digit=3"], "error: --digit needs a conditional model; 'ae' is unconditional"),
    (["--num=0"], "error: --num must be in 1..10000000, got 0"),
    (["--num=1000000000"], "error: --num must be in 1..10000000, got 1000000000"),
    (["--interpolate=0,1", "--steps=100000000"], "error: --steps must be in 2..1000"),
    (["--temperature=0.5"], "error: --temperature is for vqvae_cond_prior, vqvae_prior runs, not 'ae'"),
    (["--sample_steps=5"], "error: --sample_steps is for cond_flow, flow, latent_flow runs, not 'ae'"),
])
def test_bad_requests_are_one_clear_line(runs, tmp_path, args, message):
  proc = _generate(f"--workdir={runs / 'ae'}", f"--out={tmp_path / 'x.png'}", *args)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(message)
  assert not (tmp_path / "x.png").exists()


def test_bad_output_paths_are_one_clear_line_before_any_work(runs, tmp_path):
  regular_file = tmp_path / "file"
  regular_file.write_text("x")
  workdir = f"--workdir={runs / 'ae'}"
  cases = [  # (command, message)
      (["experiments.generate", workdir, f"--out={tmp_path}/missing/x.png"],
       f"error: --out={tmp_path}/missing/x.png: folder {tmp_path}/missing does not exist: "
       f"create it (mkdir -p {tmp_path}/missing) or pass another --out"),
      (["experiments.generate", workdir, f"--out={tmp_path}/grid"],
       f"error: --out={tmp_path}/grid has no extension this writes: end it with .jpg, .png"),
      (["experiments.generate", workdir, f"--out={tmp_path}/ok.png",
        f"--npy={regular_file}/x.npy"],  # Refused before the PNG is written.
       f"error: --npy={regular_file}/x.npy: folder {regular_file} does not exist"),
      (["experiments.export", workdir, f"--out={tmp_path}", "--overwrite"],
       f"error: --out={tmp_path} is a directory: pass a file path"),
      (["experiments.export", workdir, f"--out={tmp_path}/missing/s.jaxexport"],
       f"error: --out={tmp_path}/missing/s.jaxexport: folder {tmp_path}/missing does not exist"),
      (["experiments.export", workdir, f"--out={tmp_path}/s.jaxexport", "--platforms=cpu,foo"],
       "error: --platforms=cpu,foo: foo is not a platform jax exports for; choose among cpu, "
       "cuda, rocm, tpu"),
  ]
  for command, message in cases:
    proc = _run("-m", *command)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith(message), (command, proc.stderr[-2000:])
    assert not any("Traceback" in line for line in lines)
  assert sorted(os.listdir(tmp_path)) == ["file"]  # Nothing written, no .tmp left behind.


def _run(*args, cwd=ROOT):
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("name", ["cond_vae", "ae", "latent_flow"])
def test_exported_sampler_gives_the_same_samples_in_a_fresh_process_without_the_library(
    runs, tmp_path, name):
  out = tmp_path / f"{name}.jaxexport"
  proc = _run("-m", "experiments.export", f"--workdir={runs / name}", f"--out={out}",
              "--platforms=cpu")
  assert proc.returncode == 0, proc.stderr[-2000:]
  loader = (  # Only jax and numpy: the library must not be importable or imported.
      "import sys, jax, numpy as np\n"
      f"sampler = jax.export.deserialize(open({str(out)!r}, 'rb').read())\n"
      "images = sampler.call(jax.random.PRNGKey(5), np.arange(12, dtype=np.int32) % 10)\n"
      f"np.save({str(tmp_path / 'exported.npy')!r}, np.asarray(images))\n"
      "assert not any(m.startswith('mnistgen_jax') for m in sys.modules)\n")
  proc = _run("-c", loader, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]

  import jax
  import jax.numpy as jnp
  from mnistgen_jax import report
  config, family, model, state = runs_lib.restore_run(str(runs / name))
  variables = state.variables()  # The checkpoint holds the fitted sampling prior.
  expected = report.make_sampler(model)(variables, jnp.arange(12, dtype=jnp.int32) % 10,
                                        jax.random.PRNGKey(5))
  exported = np.load(tmp_path / "exported.npy")
  assert exported.shape == (12, 28, 28, 1)
  np.testing.assert_allclose(exported, np.asarray(expected), atol=1e-5)

  again = _run("-m", "experiments.export", f"--workdir={runs / name}", f"--out={out}")
  assert again.returncode == 2 and again.stderr.strip().endswith(
      f"error: --out={out} exists; pass --overwrite to replace it")


def test_exported_sampler_refuses_wrong_shapes(runs, tmp_path):
  import jax
  from mnistgen_jax import export
  config, family, model, state = runs_lib.restore_run(str(runs / "cond_vae"))
  exported = jax.export.deserialize(
      export.export_sampler(model, state.variables(), ["cpu"]).serialize())
  key = jax.random.PRNGKey(0)
  for args, message in [((key, np.zeros((3, 2), np.int32)), "Rank mismatch for args[1]"),
                        ((np.zeros(4, np.uint32), np.arange(3, dtype=np.int32)),
                         "Shape mismatch for args[0]"),
                        ((key, np.arange(3.0, dtype=np.float32)), "Dtype mismatch for args[1]")]:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
      exported.call(*args)


@pytest.mark.parametrize("name,mode", [("cond_vae", "slerp"), ("ae", "lerp")])
def test_interpolation_strip(runs, tmp_path, name, mode):
  out = tmp_path / "strip.png"
  proc = _generate(f"--workdir={runs / name}", "--interpolate=0,1", "--steps=6", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"wrote a {mode} strip of {name} between test images 0 and 1 (digits 7 and 2)" in proc.stdout
  rows = 2 if name == "cond_vae" else 1  # Conditional: the path drawn as each endpoint's digit.
  assert Image.open(out).size == (2 * (8 * 30 + 2), 2 * (rows * 30 + 2))


@pytest.mark.parametrize("value,message", [
    ("0", "error: --interpolate needs two test-image indices like 0,1; got '0'"),
    ("0,10000", "error: --interpolate index 10000 is outside the test set (0..9999)"),
])
def test_bad_interpolation_requests(runs, tmp_path, value, message):
  proc = _generate(f"--workdir={runs / 'ae'}", f"--interpolate={value}", f"--out={tmp_path / 's.png'}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == message
  assert not (tmp_path / "s.png").exists()


def test_latent_space_figure_of_two_runs(runs, tmp_path):
  out = tmp_path / "latent.png"
  proc = _run("-m", "experiments.latent_space", f"--workdirs={runs / 'ae'},{runs / 'cond_vae'}",
              "--num=300", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "ae: test-set codes (4-D), cond_vae: test-set codes (4-D)" in proc.stdout
  assert Image.open(out).size[0] > Image.open(out).size[1]  # Two panels side by side.
