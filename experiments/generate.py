r"""Samples digits from any trained run: a PNG grid, optionally the uint8 images as .npy.

  python -m experiments.generate --workdir=runs/cond_vae --num=64 --out=digits.png --digit=7

A plain auto-encoder samples through a Gaussian fitted to its training codes; the VQ-VAE alone
through its codes' frequencies; conditional models honour --digit (else cycle 0..9).
"""
import math
import sys

from absl import app, flags, logging

from mnistgen_jax import checkpoint, data

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run written by experiments.train")
flags.DEFINE_integer("num", 64, "number of samples")
flags.DEFINE_string("out", "digits.png", "PNG grid to write")
flags.DEFINE_integer("digit", None, "conditional models: the digit to draw (0-9)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_float("temperature", None, "autoregressive priors: sampling temperature")
flags.DEFINE_string("npy", None, "also save the uint8 images (num, 28, 28, 1) here")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  import numpy as np
  from mnistgen_jax import configs, report, trainer, viz
  from mnistgen_jax.metrics import evaluate

  try:
    if FLAGS.num <= 0:
      raise ValueError(f"--num must be a positive integer, got {FLAGS.num}")
    config, family, model, state = trainer.restore_run(FLAGS.workdir)
    if not hasattr(model, "sample"):
      raise ValueError(f"{FLAGS.workdir} holds a {config.model!r} run, which cannot sample")
    if FLAGS.digit is not None:
      if not family.conditional:
        raise ValueError(f"--digit needs a conditional model; {config.model!r} is unconditional "
                         "(try cond_vae, vqvae_cond_prior or cond_dcgan)")
      if not 0 <= FLAGS.digit <= 9:
        raise ValueError(f"--digit must be in 0..9, got {FLAGS.digit}")
    if FLAGS.temperature is not None:
      if not hasattr(model, "temperature"):
        raise ValueError(f"--temperature applies to autoregressive priors, not {config.model!r}")
      saved = config.to_dict()
      saved.update(temperature=FLAGS.temperature)
      model = family.build(configs.get_config(saved.pop("model"), **saved))
    train = data.load(config.dataset, "train", limit=config.train_size or None,
                      source=config.data_source, data_dir=config.data_dir or None)
    variables = report.sampling_variables(family, model, state.variables(), train,
                                          config.eval_batch_size)
  except (ValueError, data.DataError, checkpoint.CheckpointError) as e:
    sys.exit(f"error: {e}")
  if FLAGS.digit is not None:
    labels = np.full(FLAGS.num, FLAGS.digit, np.int32)
  else:
    labels = np.arange(FLAGS.num, dtype=np.int32) % 10
  images = evaluate.generate(model, variables, labels, jax.random.PRNGKey(FLAGS.seed),
                             batch_size=min(FLAGS.num, 1000))
  by_digit = family.conditional and FLAGS.digit is None
  ncol = 10 if by_digit else math.ceil(math.sqrt(FLAGS.num))
  if by_digit:  # Column-major cycling 0..9 puts one digit per column: transpose into rows.
    rows = math.ceil(FLAGS.num / 10)
    order = [i for d in range(10) for i in range(d, FLAGS.num, 10)]
    images, ncol = images[order], rows
  viz.save_grid(FLAGS.out, images, ncol=ncol)
  if FLAGS.npy:
    np.save(FLAGS.npy, images)
  print(f"wrote {FLAGS.num} samples of {config.model} to {FLAGS.out}"
        + (f" and {FLAGS.npy}" if FLAGS.npy else ""))


if __name__ == "__main__":
  app.run(main)
