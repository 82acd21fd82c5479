import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, init_state, tiny_config
from mnistgen_jax import train as train_lib
from mnistgen_jax import cpu_compiler, runs, trainer
from mnistgen_jax import evaluation
from mnistgen_jax.metrics import features, likelihood



@pytest.fixture(scope="module")
def ref():
  return evaluation.Reference.load("mnist", progress=False)


def test_committed_classifiers_meet_their_accuracy(ref):
  manifest = features.read_manifest()
  assert manifest["mnist"]["test_accuracy"] >= 0.993
  assert manifest["fashion_mnist"]["test_accuracy"] >= 0.91
  # Recomputed here, on the first 2000 test digits, not read from the manifest.
  _, probs = ref.features(ref.test_images[:2000], "t")
  accuracy = float((np.asarray(probs).argmax(1) == ref.test_labels[:2000]).mean())
  assert accuracy >= 0.99
  assert ref.test_features.shape == (10000, 128)


def test_tampered_weights_are_refused(tmp_path):
  shutil.copytree(features.WEIGHTS_DIR, tmp_path, dirs_exist_ok=True)
  with open(tmp_path / "lenet_mnist.msgpack", "r+b") as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(features.FeatureNetworkError, match="has sha256 .* the manifest pins"):
    features.load_classifier("mnist", weights_dir=str(tmp_path))
  with pytest.raises(features.FeatureNetworkError, match="no evaluation classifier for 'kmnist'"):
    features.load_classifier("kmnist")


@pytest.mark.slow
def test_calibration_rows_are_ordered(ref):
  rows = evaluation.calibration(ref, jax.random.PRNGKey(0), num=2000)
  fids = {name: row["fid_lenet"] for name, row in rows.items()}
  floor = fids["real train vs test"]
  assert floor < fids["test + N(0, 0.1^2) pixel noise"] < fids["test + N(0, 0.3^2) pixel noise"]
  assert fids["test + N(0, 0.3^2) pixel noise"] < fids["pure noise, clip(N(0.5, 0.5^2))"]
  assert floor < fids["test, Gaussian blur sigma=1px"]
  assert rows["real train vs test"]["classifier_score"] > 9.5  # Real digits: near the max of 10.
  assert rows["pure noise, clip(N(0.5, 0.5^2))"]["recall"] < 0.01


def test_calibration_is_computed_once_then_read_from_the_cache(ref, tmp_path, monkeypatch):
  key, cache = jax.random.PRNGKey(0), str(tmp_path / "cache")
  rows, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=cache)
  path = evaluation.calibration_cache_path(ref, key, 100, cache)
  assert source == "computed" and os.path.isfile(path) and path.startswith(cache)
  assert set(rows) == {"real train vs test", "test, Gaussian blur sigma=1px",
                       "test + N(0, 0.1^2) pixel noise", "test + N(0, 0.3^2) pixel noise",
                       "pure noise, clip(N(0.5, 0.5^2))"}
  # Anything the rows depend on names another file.
  assert evaluation.calibration_cache_path(ref, key, 99, cache) != path
  assert evaluation.calibration_cache_path(ref, jax.random.PRNGKey(1), 100, cache) != path
  # From here on a stand-in computes the rows: it counts the calls and marks what it returns.
  computed = []
  fresh = {"stand-in row": {"fid_lenet": 1.5}}
  monkeypatch.setattr(evaluation, "calibration", lambda *a, **k: computed.append(1) or fresh)
  again, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=cache)
  assert source == f"cache {path}" and again == rows and not computed
  again, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=cache, recompute=True)
  assert source == "computed" and again == fresh and computed == [1]
  assert json.loads(open(path).read())["rows"] == fresh  # Rewritten.
  with open(path, "w") as f:
    f.write('{"rows": {"real train')  # A file cut short: computed anew, and rewritten whole.
  again, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=cache)
  assert source == "computed" and again == fresh and computed == [1, 1]
  assert json.loads(open(path).read())["rows"] == fresh
  edited = json.loads(open(path).read())
  edited["rows"]["stand-in row"]["fid_lenet"] = 0.5  # Edited: its digest fails, so recomputed.
  with open(path, "w") as f:
    json.dump(edited, f)
  again, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=cache)
  assert source == "computed" and again == fresh and computed == [1, 1, 1]
  assert json.loads(open(path).read())["rows"] == fresh
  blocked = tmp_path / "a_file"
  blocked.write_text("")  # A cache directory that cannot be made: the rows are still given.
  again, source = evaluation.cached_calibration(ref, key, num=100, cache_dir=str(blocked))
  assert source == "computed" and again == fresh and computed == [1, 1, 1, 1]


@pytest.mark.slow
def test_reference_is_computed_once_then_read_from_the_cache(ref, tmp_path, monkeypatch):
  cache = str(tmp_path / "cache")
  first = evaluation.Reference.load("mnist", progress=False, cache_dir=cache)
  path = evaluation.reference_cache_path(first, cache)
  assert os.path.isfile(path) and path.startswith(cache)
  # Other test images name another file.
  other = evaluation.Reference(**{**vars(first), "test_images": first.test_images[:100]})
  assert evaluation.reference_cache_path(other, cache) != path
  # The second load reads the file: no features extracted, the same values to the last bit.
  monkeypatch.setattr(evaluation.Reference, "features", lambda *a: pytest.fail(
      "features extracted although the cache holds them"))
  extracted = evaluation.Reference.load("mnist", progress=False, cache_dir=cache)
  monkeypatch.undo()
  for got, want in ((extracted, first), (first, ref)):
    np.testing.assert_array_equal(got.test_features, want.test_features)
    np.testing.assert_array_equal(got.test_radii, want.test_radii)
    for name in evaluation.STATS_FIELDS:
      a, b = getattr(got.test_stats, name), getattr(want.test_stats, name)
      assert a.dtype == b.dtype and np.array_equal(a, b), name
  images = ref.test_images[:500]
  assert extracted.fid(images, "t") == ref.fid(images, "t")
  whole = open(path, "rb").read()
  for cut in (whole[:len(whole) // 2], b"PK"):  # A file cut short: computed anew, rewritten.
    with open(path, "wb") as f:
      f.write(cut)
    again = evaluation.Reference.load("mnist", progress=False, cache_dir=cache)
    np.testing.assert_array_equal(again.test_radii, ref.test_radii)
    assert open(path, "rb").read() == whole
  with np.load(path) as kept:  # Edited, readable: its digest fails, so computed anew, rewritten.
    arrays = {k: kept[k] for k in kept.files}
  arrays["radii"] = arrays["radii"] * 2
  np.savez(path, **arrays)
  again = evaluation.Reference.load("mnist", progress=False, cache_dir=cache)
  np.testing.assert_array_equal(again.test_radii, ref.test_radii)
  assert open(path, "rb").read() == whole
  blocked = tmp_path / "a_file"
  blocked.write_text("")  # A cache directory that cannot be made: computed, nothing else.
  np.testing.assert_array_equal(
      evaluation.Reference.load("mnist", progress=False, cache_dir=str(blocked)).test_features,
      ref.test_features)


@pytest.mark.slow
def test_evaluate_run_for_a_conditional_model(tmp_path, ref):
  trainer.train_and_evaluate(tiny_config("cond_vae"), str(tmp_path), print_fn=lambda *a: None)
  result = evaluation.evaluate_run(str(tmp_path), num_samples=300, iwae_samples=4, ref=ref,
                                 progress=False)
  assert result["step"] == 8 and result["num_samples"] == 300
  samples = result["samples"]
  for name in ("fid_lenet", "kid_lenet", "precision", "recall", "density", "coverage",
               "classifier_score", "label_accuracy"):
    assert np.isfinite(samples[name]), name
  assert 0 <= samples["label_accuracy"] <= 1 and 1 <= samples["classifier_score"] <= 10
  assert 0 <= samples["digit_entropy"] <= np.log(10) + 1e-9
  assert np.isfinite(result["iwae_nll_k4"]) and result["iwae_nll_k4"] > 0
  assert result["reconstructions"]["fid_lenet"] > 0
  evaluation.save_evaluation(str(tmp_path), result)
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved["evaluation"]["samples"]["fid_lenet"] == samples["fid_lenet"]
  assert "test" in saved  # The training results are kept.
  # The IWAE bound of the first 40 test images: their mean, recorded as such.
  config, _, model, state = runs.restore_run(str(tmp_path))
  first = evaluation.evaluate_variables(config, model, state.variables(), 100, 4, False, ref,
                                      iwae_images=40)
  key = jax.random.fold_in(jax.random.fold_in(train_lib.root_keys(config.train.seed)["eval"], 1), 4)
  direct = likelihood.iwae_nll(model, state.variables(), ref.test_images[:40],
                               ref.test_labels[:40], key, 4,
                               compiler_options=cpu_compiler.of_config(config))
  assert first["iwae_images"] == 40 and first["iwae_nll_k4"] == direct
  # Its standard error over the 40 images, from the same per-image bounds.
  per_image = likelihood.iwae_nll_per_image(model, state.variables(), ref.test_images[:40],
                                            ref.test_labels[:40], key, 4,
                                            compiler_options=cpu_compiler.of_config(config))
  assert per_image.shape == (40,) and float(per_image.mean()) == direct
  np.testing.assert_allclose(first["iwae_nll_k4_stderr"], per_image.std(ddof=1) / np.sqrt(40),
                             rtol=1e-12)
  assert 0 < first["iwae_nll_k4_stderr"] < per_image.std()
  # Decoded in passes of 2 samples x 100 images or all at once: the same draws, the same bound.
  passes = [evaluation.evaluate_variables(config, model, state.variables(), 100, 4, False, ref,
                                        iwae_images=40, iwae_decodes_per_pass=d)
            for d in (200, 0)]
  np.testing.assert_allclose(passes[0]["iwae_nll_k4"], passes[1]["iwae_nll_k4"], rtol=1e-6)
  np.testing.assert_allclose(passes[0]["iwae_nll_k4"], direct, rtol=1e-6)


@pytest.mark.slow
def test_compare_writes_a_table(tmp_path):
  for name in ("ae", "vae"):
    trainer.train_and_evaluate(tiny_config(name, num_epochs=1), str(tmp_path / name),
                               print_fn=lambda *a: None)
  out = tmp_path / "table.md"
  proc = subprocess.run([sys.executable, "-m", "experiments.compare",
                         f"--workdirs={tmp_path / 'ae'},{tmp_path / 'vae'}", f"--out={out}"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  lines = out.read_text().splitlines()
  assert lines[0].startswith("| run | model | params") and len(lines) == 4
  assert "| vae | vae |" in lines[3] and "(neg_elbo)" in lines[3]
  proc = subprocess.run([sys.executable, "-m", "experiments.compare",
                         f"--workdirs={tmp_path / 'missing'}"], cwd=ROOT, capture_output=True,
                        text=True)
  assert proc.returncode == 2 and "eval.json is missing" in proc.stderr.strip().splitlines()[-1]


def test_batched_reconstruction_matches_the_whole_set_applier(mnist_slice):
  """evaluation.reconstruct (a jitted batch at a time, with progress; the last batch padded) gives
  the same uint8 images as the one-call applier it replaced, with a batch size that leaves a
  remainder."""
  from mnistgen_jax import models, viz
  config = tiny_config("vae")
  model = models.get("vae").build(config)
  state = init_state(model, train_lib.make_optimizer(config, 1))
  images, labels = mnist_slice[0][:250], mnist_slice[1][:250]
  want = viz.to_uint8(train_lib.make_applier(model, "reconstruct", 100)(
      state.variables(), images, labels))
  got = evaluation.reconstruct(model, state.variables(), images, labels, 100, progress=False)
  assert got.dtype == np.uint8 and got.shape == images.shape
  np.testing.assert_array_equal(got, want)
