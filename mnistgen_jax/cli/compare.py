r"""Writes a results table (markdown) for several runs side by side.

  mnistgen-compare --workdirs=runs/vae,runs/conv_vae --out=results.md

Each run should have been evaluated (mnistgen-evaluate) first; missing numbers stay
empty ("digit read": the share of a conditional model's samples that the classifier reads as
the requested digit). FIDs are fid_lenet (MNIST-classifier features), not Inception FIDs.
"""
import os

from absl import flags

from mnistgen_jax import cli, report

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "comma-separated run directories")
flags.DEFINE_string("out", None, "also write the table to this markdown file")
flags.mark_flag_as_required("workdirs")

HEADER = ["run", "model", "params", "train s", "test loss", "IWAE NLL", "FID recon",
          "FID samples", "KID", "precision", "recall", "class. score", "digit entropy",
          "digit read"]


def row(workdir: str):
  from mnistgen_jax import runs
  result = runs.read_eval_json(workdir)
  if not all(k in result for k in ("model", "test", "loss_name", "num_params", "train_seconds")):
    raise ValueError(f"{runs.eval_json_path(workdir)} is missing or holds no training results: "
                     "train (and evaluate) that run first")
  evaluation = result.get("evaluation", {})
  samples = evaluation.get("samples", {})
  iwae = next((v for k, v in evaluation.items() if k.startswith("iwae_nll")), None)
  loss = result["test"].get(result["loss_name"])
  return [os.path.basename(os.path.normpath(workdir)), result["model"], f"{result['num_params']:,}",
          f"{result['train_seconds']:.1f}", f"{loss:.2f} ({result['loss_name']})", iwae,
          evaluation.get("reconstructions", {}).get("fid_lenet"), samples.get("fid_lenet"),
          samples.get("kid_lenet"), samples.get("precision"), samples.get("recall"),
          samples.get("classifier_score"), samples.get("digit_entropy"),
          samples.get("label_accuracy")]


def main(argv):
  del argv
  rows = [row(w) for w in FLAGS.workdirs]
  table = report.markdown_table(HEADER, rows)
  print(table)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(table + "\n")


def run():
  """Console script `mnistgen-compare`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
