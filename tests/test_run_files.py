"""The files of a workdir that a crash, an edit or a bad number could spoil: metrics.jsonl's
lines, strict JSON everywhere, eval.json that cannot be merged into, the evaluation's caches'
digests, and sampling settings that would make a silent wrong answer."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistgen_jax import configs, evaluation, files, runs
from mnistgen_jax.checkpoint import CheckpointError


def _strict_loads(text: str):
  """json.loads that refuses NaN and Infinity, as strict JSON readers do."""
  def refuse(name):
    raise ValueError(f"not JSON: {name}")
  return json.loads(text, parse_constant=refuse)


def _records(steps):
  return [{"step": s, "epoch": 1, "split": "train", "loss": 10.0 - s} for s in steps]


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_on_resume(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps(r) for r in _records(range(1, 6))]
  path.write_text("\n".join(lines) + '\n{"step": 6, "epo')  # Cut off while written.
  said = []
  log = runs.MetricsLog(str(tmp_path), 5, write=True, print_fn=said.append)
  log.close()
  assert path.read_text() == "\n".join(lines) + "\n"
  assert [r["step"] for r in log.records] == [1, 2, 3, 4, 5]
  assert len(said) == 1 and "dropped its last line (6)" in said[0]


@pytest.mark.parametrize("bad", ['{"step": 3, "epo', '[1, 2]', '{"split": "train", "loss": 1}',
                                 '{"step": "3", "split": "train"}'])
def test_a_bad_metrics_line_before_the_last_is_refused_with_its_number(tmp_path, bad):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps(r) for r in _records(range(1, 6))]
  lines[2] = bad
  text = "\n".join(lines) + "\n"
  path.write_text(text)
  with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 3: not a metrics record") as e:
    runs.MetricsLog(str(tmp_path), 5, write=True, print_fn=pytest.fail)
  assert "\n" not in str(e.value)
  assert path.read_text() == text  # Left as it was, and no temporary file beside it.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_every_json_the_runs_write_is_strict(tmp_path):
  values = {"fid_lenet": float("nan"), "kid": np.float32("inf"), "ok": np.float64(1.5),
            "rows": [float("-inf"), 2.0, 3], "steps": np.int64(7), "done": True}
  runs.write_json(str(tmp_path / "a.json"), values)
  assert _strict_loads((tmp_path / "a.json").read_text()) == {
      "fid_lenet": None, "kid": None, "ok": 1.5, "rows": [None, 2.0, 3], "steps": 7, "done": True}
  log = runs.MetricsLog(str(tmp_path), 0)
  log.write([{"step": 1, "epoch": 1, "split": "train", "loss": float("nan"), "kl": 2.0}])
  log.close()
  assert _strict_loads((tmp_path / "metrics.jsonl").read_text()) == {
      "step": 1, "epoch": 1, "split": "train", "loss": None, "kl": 2.0}
  assert files.strict_json((1.0, math.inf)) == [1.0, None]


@pytest.mark.parametrize("text", ["{not json", "[]", '"text"'])
def test_an_eval_json_that_cannot_be_merged_into_is_refused_in_one_line_and_kept(tmp_path, text):
  (tmp_path / "eval.json").write_text(text)
  with pytest.raises(CheckpointError, match="eval.json .*move it away") as e:
    runs.update_eval_json(str(tmp_path), {"evaluation": {"step": 1}})
  assert "\n" not in str(e.value) and (tmp_path / "eval.json").read_text() == text
  assert runs.saved_eval_json(str(tmp_path / "none")) == {}


@pytest.mark.parametrize("field,value", [("autoguidance", math.inf), ("guidance", math.nan),
                                         ("learning_rate", math.inf), ("ema_decay", -math.inf)])
def test_a_number_that_is_not_finite_is_refused_naming_the_flag(field, value):
  with pytest.raises(ValueError, match=f"--{field} must be a finite number"):
    configs.get_config("latent_flow", **{field: value})


def test_too_few_samples_for_the_sample_metrics_are_refused():
  for n in (0, 1, evaluation.MIN_SAMPLES - 1):
    with pytest.raises(ValueError, match=f"--eval_samples={n}: .* at least"):
      evaluation.check_num_samples(n, "eval_samples")
  evaluation.check_num_samples(evaluation.MIN_SAMPLES)


def _checkpoint_at(workdir, step):
  (workdir / "checkpoints" / str(step)).mkdir(parents=True)


def test_eval_json_is_merged_part_by_part_and_older_parts_are_marked_stale(tmp_path):
  _checkpoint_at(tmp_path, 96)
  runs.update_eval_json(str(tmp_path), {"step": 96, "test": {"loss": 90.0}})
  with_iwae = {"step": 96, "samples": {"fid_lenet": 20.0}, "reconstructions": {"fid_lenet": 3.0},
               "iwae_nll_k50": 88.0, "iwae_nll_k50_stderr": 0.3, "iwae_images": 100}
  runs.update_evaluation(str(tmp_path), with_iwae)
  _checkpoint_at(tmp_path, 192)  # Trained on; then evaluated again without the IWAE bound.
  runs.update_evaluation(str(tmp_path), {"step": 192, "samples": {"fid_lenet": 12.0},
                                         "reconstructions": {"fid_lenet": 2.5}})
  saved = _strict_loads((tmp_path / "eval.json").read_text())
  evaluation = saved["evaluation"]
  assert evaluation["samples"] == {"fid_lenet": 12.0} and evaluation["iwae_nll_k50"] == 88.0
  assert evaluation["iwae_images"] == 100 and evaluation["step"] == 192
  assert evaluation["part_steps"] == {"samples": 192, "reconstructions": 192,
                                      "iwae_nll_k50": 96}
  assert evaluation["stale"] == ["iwae_nll_k50"] and saved["test"] == {"loss": 90.0}
  # A new bound over all test images replaces the old one's image count too.
  runs.update_evaluation(str(tmp_path), {"step": 192, "iwae_nll_k50": 87.0,
                                         "iwae_nll_k50_stderr": 0.2})
  evaluation = runs.read_eval_json(str(tmp_path))["evaluation"]
  assert "iwae_images" not in evaluation and evaluation["stale"] == []
  assert evaluation["samples"] == {"fid_lenet": 12.0}
  # Training on writes its results: every part of the evaluation is now of an older step.
  _checkpoint_at(tmp_path, 288)
  runs.update_eval_json(str(tmp_path), {"step": 288, "test": {"loss": 80.0}})
  evaluation = runs.read_eval_json(str(tmp_path))["evaluation"]
  assert evaluation["stale"] == ["iwae_nll_k50", "reconstructions", "samples"]


def test_an_evaluation_block_of_an_older_layout_is_merged_with_its_own_step(tmp_path):
  _checkpoint_at(tmp_path, 8)
  runs.write_json(str(tmp_path / "eval.json"), {"evaluation": {
      "step": 4, "samples": {"fid_lenet": 9.0}, "iwae_nll_k5": 100.0}})
  runs.update_evaluation(str(tmp_path), {"step": 8, "samples": {"fid_lenet": 8.0}})
  evaluation = runs.read_eval_json(str(tmp_path))["evaluation"]
  assert evaluation["part_steps"] == {"samples": 8, "iwae_nll_k5": 4}
  assert evaluation["stale"] == ["iwae_nll_k5"]


def test_evaluation_is_refused_in_one_line_while_another_process_holds_the_run(tmp_path):
  """The lock is an OS file lock (flock): a second holder, in this process or another, fails."""
  with runs.lock(str(tmp_path)):
    with pytest.raises(CheckpointError, match="is in use by a run of PID") as e:
      evaluation.evaluate_trained_run(str(tmp_path), 100, 0, progress=False)
  assert "\n" not in str(e.value)


def test_a_hand_edited_config_json_is_refused_naming_the_fields(tmp_path):
  runs.write_config(str(tmp_path), configs.get_config("vae"))
  assert runs.load_config(str(tmp_path)).model.activation == "relu"
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  saved["run"]["num_epochs"] = 20  # A resumable field: not bound to the checkpoints.
  path.write_text(json.dumps(saved))
  assert runs.load_config(str(tmp_path)).run.num_epochs == 20
  saved["model"]["activation"], saved["model"]["latent_dim"] = "tanh", 2
  path.write_text(json.dumps(saved))
  with pytest.raises(CheckpointError, match=r"config.json differs from what its checkpoints were "
                     r"trained with: activation='tanh' \(trained with 'relu'\), latent_dim=2 "
                     r"\(trained with 20\); put those values back") as e:
    runs.load_config(str(tmp_path))
  assert "\n" not in str(e.value)
  # A run of an older layout has no trained_with.json: its config.json is taken as it is.
  (tmp_path / runs.TRAINED_WITH).unlink()
  assert runs.load_config(str(tmp_path)).model.latent_dim == 2


def test_resuming_on_another_device_count_is_refused_unless_allowed(tmp_path):
  runs.write_config(str(tmp_path), configs.get_config("vae"), devices=1)
  runs.check_devices(str(tmp_path), 1)
  with pytest.raises(CheckpointError, match=r"trained on 1 device\(s\), and this run has 8: .* "
                     r"pass --num_devices=1 .* --allow_device_change") as e:
    runs.check_devices(str(tmp_path), 8)
  assert "\n" not in str(e.value)
  runs.check_devices(str(tmp_path), 8, allow_change=True)
  # A run saved before the count was recorded resumes as before.
  bound = json.loads((tmp_path / runs.TRAINED_WITH).read_text())
  assert bound["devices"] == 1 and bound["family"] == "vae"
  del bound["devices"]
  runs.write_json(str(tmp_path / runs.TRAINED_WITH), bound)
  runs.check_devices(str(tmp_path), 8)


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  target = tmp_path / "sampler.jaxexport"
  orphan = tmp_path / f"sampler.tmp{dead}.jaxexport"         # its writer killed long ago
  recent = tmp_path / f"sampler.tmp{int(dead) + 1}.jaxexport"  # too young to tell: kept
  live = tmp_path / f"sampler.tmp{os.getppid()}.jaxexport"     # a running writer's: kept
  for path in (orphan, recent, live):
    path.write_text("partial")
  long_ago = time.time() - 2 * files.ORPHAN_AGE_SECONDS
  for path in (orphan, live):
    os.utime(path, (long_ago, long_ago))
  files.write_atomically(str(target), lambda tmp: open(tmp, "w").write("whole"))
  assert target.read_text() == "whole" and not orphan.exists()
  assert recent.exists() and live.exists()
