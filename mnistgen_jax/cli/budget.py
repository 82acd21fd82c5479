r"""Trains and evaluates every family at one parameter budget and writes the comparison table.

  mnistgen-budget --preset=1m --root=runs/budget_1m --num_epochs=5

Each family is built with its config file's PRESETS[--preset] (about the same number of trained
parameters), trained --num_epochs with its own defaults otherwise, then evaluated in memory:
fid_lenet of --eval_samples samples and of the test set's reconstructions. A multi-stage family
(a prior) trains its first stage-1 family first; its parameters and training time are stage 1's
plus its own. Re-running resumes/reuses runs.
Writes <root>/budget.md and <root>/budget.json.
"""
import os

from absl import flags, logging

from mnistgen_jax import cli, configs, models

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "1m", "parameter budget of the families' config files, e.g. 1m")
flags.DEFINE_string("root", None, "directory holding one run per family")
flags.DEFINE_list("families", ["ae", "vae", "conv_vae", "cond_vae", "latent_flow", "vqvae_prior",
                               "dcgan", "cond_dcgan"], "families to compare")
flags.DEFINE_integer("num_epochs", 10, "epochs per run (stage 1 and prior alike)")
flags.DEFINE_integer("eval_samples", 10000, "samples for the FID of samples")
flags.DEFINE_integer("train_size", 0, "train on the first N training images (0 = all)")
flags.DEFINE_integer("test_size", 0, "per-epoch test loss on the first N test images (0 = all)")
flags.DEFINE_integer("log_every", 100, "steps per progress line")
flags.mark_flag_as_required("root")

HEADER = ["family", "params", "epochs", "train s", "test loss", "FID samples", "FID recon"]


def config_of(model: str, **overrides):
  """The family's config at the budget's preset, epochs and data sizes (validated)."""
  return configs.get_config(model, preset=FLAGS.preset, num_epochs=FLAGS.num_epochs,
                            train_size=FLAGS.train_size, test_size=FLAGS.test_size,
                            log_every=FLAGS.log_every, **overrides)


def train_one(model: str, workdir: str, **overrides) -> dict:
  from mnistgen_jax import trainer
  config = config_of(model, **overrides)
  prefix = f"[{model}] "
  return trainer.train_and_evaluate(config, workdir,
                                    print_fn=lambda s: print(prefix + s, flush=True))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from mnistgen_jax import evaluation, report, runs

  rows, results = [], {}
  for name in FLAGS.families:  # Every config checked before any training.
    config_of(name)
    for stage1 in models.get(name).stage1_families[:1]:
      config_of(stage1)
  ref = evaluation.Reference.load(configs.get_config(FLAGS.families[0]).data.dataset)
  for name in FLAGS.families:
    workdir = os.path.join(FLAGS.root, name)
    stages, overrides = [], {}
    stage1_families = models.get(name).stage1_families
    if stage1_families:  # A prior: its (first) stage-1 family is trained first.
      overrides["stage1_workdir"] = os.path.join(FLAGS.root, stage1_families[0])
      stages.append(train_one(stage1_families[0], overrides["stage1_workdir"]))
    stages.append(train_one(name, workdir, **overrides))
    last = stages[-1]
    scores = evaluation.evaluate_run(workdir, FLAGS.eval_samples, iwae_samples=0, ref=ref)
    evaluation.save_evaluation(workdir, scores)
    results[name] = {
        "num_params": last["num_params"],  # A prior's count includes its frozen stage 1.
        "epochs": last["epochs"],
        "train_seconds": round(sum(s["train_seconds"] for s in stages), 2),
        "test_loss": last["test"][last["loss_name"]], "loss_name": last["loss_name"],
        "fid_samples": scores.get("samples", {}).get("fid_lenet"),
        "fid_reconstructions": scores.get("reconstructions", {}).get("fid_lenet")}
    r = results[name]
    rows.append([name, f"{r['num_params']:,}", f"{r['epochs']:g}", f"{r['train_seconds']:.1f}",
                 f"{r['test_loss']:.2f} ({r['loss_name']})", r["fid_samples"],
                 r["fid_reconstructions"]])
    print(f"[{name}] FID samples {r['fid_samples']:.2f}" + (
        f", FID reconstructions {r['fid_reconstructions']:.2f}"
        if r["fid_reconstructions"] is not None else ""), flush=True)
  table = report.markdown_table(HEADER, rows)
  with open(os.path.join(FLAGS.root, "budget.md"), "w") as f:
    f.write(f"Preset {FLAGS.preset}, {FLAGS.num_epochs} epochs, fid_lenet of "
            f"{FLAGS.eval_samples} samples\n\n{table}\n")
  runs.write_json(os.path.join(FLAGS.root, "budget.json"),
                    {"preset": FLAGS.preset, "num_epochs": FLAGS.num_epochs, "results": results})
  print(table)


def run():
  """Console script `mnistgen-budget`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
