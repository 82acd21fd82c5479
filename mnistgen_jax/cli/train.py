r"""Trains any registered model family; re-running with the same --workdir resumes.

  mnistgen-train --model=vae --workdir=runs/vae --num_epochs=10
  mnistgen-train --config=mnistgen_jax/configs/vae.py --config.model.latent_dim=2 \
      --workdir=runs/vae_2d
  mnistgen-train --model=latent_flow --stage1=spatial_vae --workdir=runs/grid_flow

A prior with --stage1=FAMILY trains that stage 1 first, into <workdir>/stage1 (or resumes it),
then itself over its codes.

The config is the family's file in mnistgen_jax/configs/ (--config, or --model=NAME for its own);
`--FIELD=VALUE` is short for `--config.SECTION.FIELD=VALUE` (mnistgen_jax/cli). After training,
the final checkpoint is evaluated (fid_lenet etc., as mnistgen-evaluate) unless --noevaluate.
"""

from absl import flags, logging

from mnistgen_jax import cli, configs

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, f"short for --config=<its file>: {', '.join(configs.names())}")
flags.DEFINE_string("preset", None, "parameter-budget preset of the family's config, e.g. 1m")
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and pictures")
flags.DEFINE_bool("distributed", False, "multi-host (TPU pod, several GPU nodes): call "
                  "jax.distributed.initialize first; cluster settings auto-detected unless given")
flags.DEFINE_string("coordinator_address", None, "--distributed: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "--distributed: number of processes")
flags.DEFINE_integer("process_id", None, "--distributed: this process's index")
flags.DEFINE_bool("evaluate", True, "after training, compute fid_lenet etc. (mnistgen-evaluate)")
flags.DEFINE_integer("eval_samples", 10000, "samples for the sample metrics of --evaluate")
flags.DEFINE_integer("iwae_samples", 50, "importance samples of the IWAE bound (0: skip)")
flags.DEFINE_integer("reconstruction_images", 0, "reconstruction FID of the first N test images "
                     "only (0: all; pixel-by-pixel decoders such as pixel_vae are slow)")
cli.define_compilation_cache_flag()
flags.mark_flag_as_required("workdir")
_CONFIG = cli.define_config_flag(
    "a family's config file, e.g. mnistgen_jax/configs/vae.py[:preset]; fields are set with "
    "--config.FIELD=VALUE (or --FIELD=VALUE)")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}; every option is --NAME=VALUE")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO.
  if FLAGS.distributed:  # Before any other jax call: every process then sees all devices.
    import jax
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from mnistgen_jax import trainer  # Imports jax; after flag parsing so --help stays fast.
  if FLAGS.reconstruction_images < 0:
    raise ValueError("--reconstruction_images must be >= 0 (0: all test images), got "
                     f"{FLAGS.reconstruction_images}")
  config = configs.validate(_CONFIG.value)
  if config.model.get("stage1"):
    train_stage1(config, FLAGS.workdir, FLAGS.evaluate and not FLAGS.distributed,
                 FLAGS.eval_samples, FLAGS.reconstruction_images)
  result = trainer.train_and_evaluate(config, FLAGS.workdir)
  evaluation = None
  if FLAGS.evaluate and not FLAGS.distributed:
    from mnistgen_jax import evaluation as evaluation_lib
    evaluation = evaluation_lib.evaluate_trained_run(
        FLAGS.workdir, FLAGS.eval_samples, FLAGS.iwae_samples, FLAGS.reconstruction_images)
  import jax
  if jax.process_index() != 0:
    return  # Several hosts: the first reports.
  test = " ".join(f"{k} {v:.3f}" for k, v in result["test"].items())
  print(f"done: {result['step']} steps in {result['train_seconds']:.1f} s of training; test {test}; "
        f"outputs in {FLAGS.workdir}")
  if FLAGS.distributed and FLAGS.evaluate:
    print("evaluation skipped on a multi-host run: run mnistgen-evaluate on one host")
  if evaluation:
    summary = {f"{part} fid_lenet": evaluation[part]["fid_lenet"]
               for part in ("reconstructions", "samples") if part in evaluation}
    summary.update({k: v for k, v in evaluation.items() if k.startswith("iwae")})
    print("evaluation: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))


def train_stage1(config, workdir: str, evaluate: bool = True, eval_samples: int = 10000,
                 reconstruction_images: int = 0, print_fn=print) -> None:
  """--stage1=FAMILY: stage 1 trained (or resumed) in <workdir>/stage1 and evaluated (without
  the IWAE bound: mnistgen-evaluate adds it), for the prior to train on next. Skipped once the
  prior's workdir stores its stage 1 (runs.load_stage1): the prior then needs nothing else."""
  from mnistgen_jax import models, runs, trainer
  family = models.get(config.family)
  if config.model.stage1 not in family.stage1_families:
    raise ValueError(f"--stage1={config.model.stage1}: --model={config.family} builds on "
                     f"{', '.join(family.stage1_families)}")
  if runs.is_self_contained(workdir):
    return
  stage1_dir = runs.stage1_workdir(config, workdir)
  stage1_config = configs.stage1_config(config)
  if not runs.is_finished_run(stage1_dir):
    print_fn(f"stage 1: {config.model.stage1} in {stage1_dir}")
    trainer.train_and_evaluate(stage1_config, stage1_dir, print_fn=print_fn)
  if evaluate and not runs.is_evaluated(stage1_dir):
    from mnistgen_jax import evaluation
    evaluation.evaluate_trained_run(stage1_dir, eval_samples, 0, reconstruction_images,
                                    progress=print_fn is print, print_fn=print_fn)
  print_fn(f"stage 2: {config.family} in {workdir}")


def run():
  """Console script `mnistgen-train`."""
  cli.run_binary(main, then="run the same command again: it resumes from its last checkpoint",
                 flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
