"""TensorBoard: training's scalars (loss terms, learning rate, gradient norm, throughput) and every
evaluation's scalars and images, read back from the event files."""
import glob
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from conftest import ROOT, quiet, tiny_config
from mnistgen_jax import evaluation, trainer

# End-to-end: trains and evaluates runs (pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow


def read_events(workdir) -> dict:
  """{tag: [(step, value or (height, width) of the image)]} over every event file of the run."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      raw = f.read()
    at = 0
    while at < len(raw):  # TFRecord: length (8), its crc (4), the event, the event's crc (4).
      (length,) = struct.unpack("<Q", raw[at:at + 8])
      event = event_pb2.Event.FromString(raw[at + 12:at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        shown = value.simple_value if value.HasField("simple_value") else (
            value.image.height, value.image.width)
        out.setdefault(value.tag, []).append((event.step, shown))
  return out


def test_training_and_its_evaluation_write_every_scalar_and_the_pictures(tmp_path):
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(tiny_config("cond_vae", num_epochs=2, lr_schedule="cosine"),
                             workdir, print_fn=quiet)
  scores = evaluation.evaluate_trained_run(workdir, 200, 2, progress=False)
  events = read_events(workdir)
  for tag in ("train/loss", "train/kl", "train/grad_norm", "test/loss", "train/learning_rate",
              "train/images_per_second"):
    assert tag in events, (tag, sorted(events))
  assert [step for step, _ in events["train/loss"]] == list(range(1, 9))
  rates = [v for _, v in events["train/learning_rate"]]
  assert rates[0] > rates[-1] >= 0  # the cosine schedule, as the steps used it
  assert all(v > 0 for _, v in events["train/grad_norm"] + events["train/images_per_second"])
  want = {"eval/samples/fid_lenet": scores["samples"]["fid_lenet"],
          "eval/samples/recall": scores["samples"]["recall"],
          "eval/samples/label_accuracy": scores["samples"]["label_accuracy"],
          "eval/reconstructions/fid_lenet": scores["reconstructions"]["fid_lenet"],
          "eval/iwae_nll_k2": scores["iwae_nll_k2"]}
  for tag, value in want.items():
    assert events[tag] == [(8, pytest.approx(value, rel=1e-6))], tag
  per_digit = [events[f"eval/samples/label_accuracy/digit_{d}"][0][1] for d in range(10)]
  assert np.mean(per_digit) == pytest.approx(scores["samples"]["label_accuracy"], abs=1e-6)
  assert events["eval/samples"] == [(8, (10 * 30 + 2, 10 * 30 + 2))]  # 100 samples, a column a digit
  assert events["eval/reconstructions"] == [(8, (2 * 30 + 2, 10 * 30 + 2))]  # 10 over 10

  # mnistgen-evaluate adds its own figures at the run's step.
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                         "--num_samples=300", "--iwae_samples=0", "--nocalibration"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  events = read_events(workdir)
  assert [step for step, _ in events["eval/samples/fid_lenet"]] == [8, 8]
  assert len(events["eval/samples"]) == 2 and len(events["eval/iwae_nll_k2"]) == 1
