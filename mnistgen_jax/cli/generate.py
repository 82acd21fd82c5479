r"""Samples digits from any trained run: a PNG grid, optionally the uint8 images as .npy.

  mnistgen-generate --workdir=runs/cond_vae --num=64 --out=digits.png --digit=7
  mnistgen-generate --workdir=runs/vae --interpolate=0,1 --out=strip.png

--interpolate=i,j draws instead a strip between test images i and j through latent space: slerp
for Gaussian latents (VAEs), lerp for auto-encoder codes and VQ codes before quantization.

A plain auto-encoder samples through a Gaussian fitted to its training codes; the VQ-VAE alone
through its codes' frequencies; conditional models honour --digit (else cycle 0..9).
"""
import math

from absl import flags, logging

from mnistgen_jax import cli, data

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run written by mnistgen-train")
flags.DEFINE_integer("num", 64, "number of samples")
flags.DEFINE_string("out", "digits.png", "PNG grid to write")
flags.DEFINE_integer("digit", None, "conditional models: the digit to draw (0-9)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("npy", None, "also save the uint8 images (num, 28, 28, 1) here")
flags.DEFINE_string("interpolate", None, "i,j: a strip between test images i and j instead")
flags.DEFINE_integer("steps", 10, "--interpolate: decoded points along the path")
cli.define_sampling_flags()
cli.define_compilation_cache_flag()
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  import numpy as np
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from mnistgen_jax import cpu_compiler, evaluation, report, runs, viz
  from mnistgen_jax.models import supports

  if FLAGS.num <= 0:
    raise ValueError(f"--num must be a positive integer, got {FLAGS.num}")
  cli.check_output("out", FLAGS.out, cli.image_extensions())  # Before any sampling.
  if FLAGS.npy:
    cli.check_output("npy", FLAGS.npy, [".npy"])
  config = cli.with_sampling_flags(runs.load_config(FLAGS.workdir))
  config, family, model, state = runs.restore_run(FLAGS.workdir, config=config)
  if not supports(model, "sample"):
    raise ValueError(f"{FLAGS.workdir} holds a {config.family!r} run, which cannot sample")
  num_classes = data.info(config.data.dataset).num_classes
  if FLAGS.digit is not None:
    if not model.conditional:
      raise ValueError(f"--digit needs a conditional model; {config.family!r} is unconditional "
                       "(try cond_vae, vqvae_cond_prior, cond_dcgan, or latent_flow over a "
                       "cond_vae run)")
    if not 0 <= FLAGS.digit < num_classes:
      raise ValueError(f"--digit must be in 0..{num_classes - 1}, got {FLAGS.digit}")
  if FLAGS.interpolate is not None:
    return interpolate(config, model, state.variables())
  variables = state.variables()  # A fitted sampling prior, if any, is in the checkpoint.
  if FLAGS.digit is not None:
    labels = np.full(FLAGS.num, FLAGS.digit, np.int32)
  else:
    labels = np.arange(FLAGS.num, dtype=np.int32) % num_classes
  images = evaluation.generate(model, variables, labels, jax.random.PRNGKey(FLAGS.seed),
                             batch_size=min(FLAGS.num, 1000),
                             sampler=report.make_sampler(model, cpu_compiler.of_config(config)))
  by_digit = model.conditional and FLAGS.digit is None
  ncol = num_classes if by_digit else math.ceil(math.sqrt(FLAGS.num))
  if by_digit:  # Column-major cycling over the classes puts one per column: transpose into rows.
    rows = math.ceil(FLAGS.num / num_classes)
    order = [i for d in range(num_classes) for i in range(d, FLAGS.num, num_classes)]
    images, ncol = images[order], rows
  cli.write_output(FLAGS.out, lambda path: viz.save_grid(path, images, ncol=ncol))
  if FLAGS.npy:
    cli.write_output(FLAGS.npy, lambda path: np.save(path, images))
  print(f"wrote {FLAGS.num} samples of {config.family} to {FLAGS.out}"
        + (f" and {FLAGS.npy}" if FLAGS.npy else ""))


def parse_pair(text: str, size: int) -> tuple[int, int]:
  try:
    i, j = (int(v) for v in text.split(","))
  except ValueError:
    raise ValueError(f"--interpolate needs two test-image indices like 0,1; got {text!r}") from None
  for v in (i, j):
    if not 0 <= v < size:
      raise ValueError(f"--interpolate index {v} is outside the test set (0..{size - 1})")
  return i, j


def interpolate(config, model, variables):
  import jax.numpy as jnp
  from mnistgen_jax import latent, viz
  from mnistgen_jax.models import supports
  from mnistgen_jax.train import to_float
  if not supports(model, "decode"):
    raise ValueError(f"{config.family!r} has no encoder, so it cannot interpolate between test "
                             "images; use a model with one (ae, vae, conv_vae, cond_vae, vqvae)")
  if FLAGS.steps < 2:
    raise ValueError(f"--steps must be >= 2, got {FLAGS.steps}")
  images, labels = data.load(config.data.dataset, "test", source=config.run.data_source,
                             data_dir=config.run.data_dir or None)
  i, j = parse_pair(FLAGS.interpolate, len(images))
  strip = latent.interpolate(model, variables, to_float(jnp.asarray(images[[i, j]])),
                             jnp.asarray(labels[[i, j]]), FLAGS.steps, model.latent_interpolation,
                             model.conditional)
  cli.write_output(FLAGS.out, lambda path: viz.save_grid(path, strip, ncol=FLAGS.steps + 2))
  print(
      f"wrote a {model.latent_interpolation} strip of {config.family} between test images {i} "
      f"and {j} (digits {labels[i]} and {labels[j]}) to {FLAGS.out}")


def run():
  """Console script `mnistgen-generate`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
