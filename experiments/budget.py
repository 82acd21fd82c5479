r"""Trains and evaluates every family at one parameter budget and writes the comparison table.

  python -m experiments.budget --preset=1m --root=runs/budget_1m --num_epochs=5

Each family is built with configs.PRESETS[--preset] (about the same number of trained parameters),
trained --num_epochs with its own defaults otherwise, then evaluated: fid_lenet of --eval_samples
samples and of the test set's reconstructions. The VQ-VAE rows train the VQ-VAE (stage 1) first;
their parameters and training time are stage 1's plus the prior's. Re-running resumes/reuses runs.
Writes <root>/budget.md and <root>/budget.json.
"""
import os
import sys

from absl import app, flags, logging

from mnistgen_jax import checkpoint, configs, data

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "1m", f"parameter budget: {', '.join(configs.PRESETS)}")
flags.DEFINE_string("root", None, "directory holding one run per family")
flags.DEFINE_list("families", ["ae", "vae", "conv_vae", "cond_vae", "vqvae_prior", "dcgan",
                               "cond_dcgan"], "families to compare")
flags.DEFINE_integer("num_epochs", 10, "epochs per run (stage 1 and prior alike)")
flags.DEFINE_integer("eval_samples", 10000, "samples for the FID of samples")
flags.DEFINE_integer("train_size", 0, "train on the first N training images (0 = all)")
flags.DEFINE_integer("test_size", 0, "per-epoch test loss on the first N test images (0 = all)")
flags.DEFINE_integer("log_every", 100, "steps per progress line")
flags.mark_flag_as_required("root")

HEADER = ["family", "params", "epochs", "train s", "test loss", "FID samples", "FID recon"]


def train_one(model: str, workdir: str, **overrides) -> dict:
  from mnistgen_jax import trainer
  config = configs.get_config(model, preset=FLAGS.preset, num_epochs=FLAGS.num_epochs,
                              train_size=FLAGS.train_size, test_size=FLAGS.test_size, log_every=FLAGS.log_every, **overrides)
  prefix = f"[{model}] "
  return trainer.train_and_evaluate(config, workdir, print_fn=lambda s: print(prefix + s,
                                                                              flush=True))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from mnistgen_jax import report
  from mnistgen_jax.metrics import evaluate

  rows, results = [], {}
  try:
    for name in FLAGS.families:  # Every name and its preset checked before any training.
      configs.get_config(name, preset=FLAGS.preset)
    ref = None
    for name in FLAGS.families:
      workdir = os.path.join(FLAGS.root, name)
      stages = []
      if name in ("vqvae_prior", "vqvae_cond_prior"):
        stage1 = os.path.join(FLAGS.root, "vqvae")
        stages.append(train_one("vqvae", stage1))
        stages.append(train_one(name, workdir, vqvae_workdir=stage1))
      else:
        stages.append(train_one(name, workdir))
      ref = ref or evaluate.Reference.load(stages[-1]["dataset"])
      evaluation = evaluate.evaluate_run(workdir, FLAGS.eval_samples, iwae_samples=0, ref=ref)
      evaluate.save_evaluation(workdir, evaluation)
      last = stages[-1]
      results[name] = {
          "num_params": last["num_params"],  # A prior's count includes its frozen stage 1.
          "epochs": last["epochs"],
          "train_seconds": round(sum(s["train_seconds"] for s in stages), 2),
          "test_loss": last["test"][last["loss_name"]], "loss_name": last["loss_name"],
          "fid_samples": evaluation.get("samples", {}).get("fid_lenet"),
          "fid_reconstructions": evaluation.get("reconstructions", {}).get("fid_lenet")}
      r = results[name]
      rows.append([name, f"{r['num_params']:,}", f"{r['epochs']:g}", f"{r['train_seconds']:.1f}",
                   f"{r['test_loss']:.2f} ({r['loss_name']})", r["fid_samples"],
                   r["fid_reconstructions"]])
      print(f"[{name}] FID samples {r['fid_samples']:.2f}" + (
          f", FID reconstructions {r['fid_reconstructions']:.2f}"
          if r["fid_reconstructions"] is not None else ""), flush=True)
  except (ValueError, data.DataError, checkpoint.CheckpointError) as e:
    sys.exit(f"error: {e}")
  table = report.markdown_table(HEADER, rows)
  with open(os.path.join(FLAGS.root, "budget.md"), "w") as f:
    f.write(f"Preset {FLAGS.preset}, {FLAGS.num_epochs} epochs, fid_lenet of "
            f"{FLAGS.eval_samples} samples\n\n{table}\n")
  report.write_json(os.path.join(FLAGS.root, "budget.json"),
                    {"preset": FLAGS.preset, "num_epochs": FLAGS.num_epochs, "results": results})
  print(table)


if __name__ == "__main__":
  app.run(main)
