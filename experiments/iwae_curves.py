r"""The NLL-against-epochs figure and table of runs made by experiments/iwae_schedule.sh
(docs/likelihoods.md): each run's per-epoch test bound (metrics.jsonl) as a line, its
k = 5000 NLL after each finished stage (nll_epoch<E>.json) as points, the paper's figure dashed.

  python -m experiments.iwae_curves --run="VAE, k = 1:runs/iwae1_vae_k1:86.76" \
      --run="IWAE, k = 5:runs/iwae1_iwae_k5:85.54" --out=curves.png --table=curves.md

--run=LABEL:WORKDIR[:PAPER_NLL]; the table has one row per evaluated stage end.
"""
import glob
import json
import os
import re
import sys

from absl import app, flags

from mnistgen_jax import report, viz

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", None, "LABEL:WORKDIR[:PAPER_NLL], once per run")
flags.DEFINE_string("out", "iwae_curves.png", "the figure (PNG)")
flags.DEFINE_string("table", None, "also write the markdown table to this file")
flags.mark_flag_as_required("run")

HEADER = ["run", "epochs", "train s", "test bound (its objective's, all 10,000)",
          "NLL, k = 5000 (nats)", "images", "paper, 3280 epochs"]


def parse_run(spec: str):
  parts = spec.split(":")
  if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
    raise ValueError(f"--run={spec!r}: expected LABEL:WORKDIR or LABEL:WORKDIR:PAPER_NLL")
  paper = float(parts[2]) if len(parts) == 3 and parts[2] else None
  return parts[0], parts[1], paper


def test_curve(workdir: str) -> dict:
  """{epoch: (test loss, train seconds)} from metrics.jsonl, read line by line (a long run's file
  holds millions of train steps)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: run experiments/iwae_schedule.sh first")
  curve = {}
  with open(path) as f:
    for line in f:
      if '"split": "test"' not in line:
        continue
      try:
        record = json.loads(line)
      except ValueError:
        continue  # A line cut by a crash.
      curve[record["epoch"]] = (record["loss"], record["train_seconds"])
  return curve


def stage_nlls(workdir: str) -> list:
  """[(epoch, nll, stderr, images)] of the run's nll_epoch<E>.json files, by epoch."""
  out = []
  for path in glob.glob(os.path.join(workdir, "nll_epoch*.json")):
    epoch = int(re.search(r"nll_epoch(\d+)\.json$", path).group(1))
    with open(path) as f:
      evaluation = json.load(f)["evaluation"]
    # iwae_images is recorded only for a subset (IWAE_IMAGES=0 evaluates all test images).
    out.append((epoch, evaluation["iwae_nll_k5000"], evaluation["iwae_nll_k5000_stderr"],
                evaluation.get("iwae_images", "all")))
  return sorted(out)


def main(argv):
  del argv
  try:
    runs = [parse_run(spec) for spec in FLAGS.run]
    series, rows = [], []
    for label, workdir, paper in runs:
      curve, nlls = test_curve(workdir), stage_nlls(workdir)
      series.append((label, curve, nlls, paper))
      for epoch, nll, stderr, images in nlls:
        loss, seconds = curve.get(epoch, (None, None))
        rows.append([label, epoch, None if seconds is None else f"{seconds:,.0f}",
                     None if loss is None else f"{loss:.2f}", f"{nll:.2f} +- {stderr:.2f}",
                     f"{images:,}" if isinstance(images, int) else images,
                     None if paper is None else f"{paper:.2f}"])
  except (OSError, ValueError, KeyError) as e:
    sys.exit(f"error: {e}")
  viz.save_nll_curves(FLAGS.out, series)
  table = report.markdown_table(HEADER, rows)
  print(table)
  print(f"figure: {FLAGS.out}")
  if FLAGS.table:
    with open(FLAGS.table, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
