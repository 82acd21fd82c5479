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
cli.define_trust_flag()
flags.DEFINE_bool("allow_device_change", False, "resume a run trained on another number of "
                  "devices (it is then not bit-identical to a straight run)")
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
  if FLAGS.evaluate:
    from mnistgen_jax import evaluation as evaluation_lib
    evaluation_lib.check_num_samples(FLAGS.eval_samples, "eval_samples")  # Before training.
  if config.model.get("stage1"):
    from mnistgen_jax import two_stage
    two_stage.train_stage1(config, FLAGS.workdir, FLAGS.evaluate and not FLAGS.distributed,
                           FLAGS.eval_samples, FLAGS.reconstruction_images)
  trust = FLAGS.trust_unverified_checkpoint
  result = trainer.train_and_evaluate(config, FLAGS.workdir, trust_unverified=trust,
                                      allow_device_change=FLAGS.allow_device_change)
  evaluation = None
  if FLAGS.evaluate and not FLAGS.distributed:
    evaluation = evaluation_lib.evaluate_trained_run(
        FLAGS.workdir, FLAGS.eval_samples, FLAGS.iwae_samples, FLAGS.reconstruction_images,
        trust_unverified=trust)
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
    summary.update({k: v for k, v in evaluation.items() if k.startswith("iwae_nll")
                    and evaluation["part_steps"].get(k.removesuffix("_stderr")) == result["step"]})
    print("evaluation: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))


def run():
  """Console script `mnistgen-train`."""
  cli.run_binary(main, then="run the same command again: it resumes from its last checkpoint",
                 flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
