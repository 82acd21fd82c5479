r"""Samples digits from any trained run: uint8 arrays (.npy / .npz) and a PNG grid.

  mnistgen-generate --workdir=runs/cond_vae --num=10000 --npy=samples.npz
  mnistgen-generate --workdir=runs/cond_vae --num=64 --digit=7 --out=sevens.png
  mnistgen-generate --workdir=runs/vae --interpolate=0,1 --out=strip.png

--npy=PATH.npz holds `images`, uint8 (num, 28, 28), and for conditional models `labels`, int32
(num,), the digit each sample was drawn for. --npy=PATH.npy holds the images alone; a conditional
model's labels then go beside it, to PATH_labels.npy. --order=drawn keeps the order of drawing
(labels 0, 1, ..., 9, 0, 1, ... unless --digit); --order=by_digit groups the samples by label.
Sampling runs --batch_size samples at a time, written straight to the file, so memory stays one
batch whatever --num is.

The PNG grid (--out; digits.png when no --npy is asked for) shows the first 400 samples at most,
in rows of 20 (10 for conditional models up to 100 samples, a digit per column), and says so.

--interpolate=i,j draws instead a strip between test images i and j through latent space: slerp
for Gaussian latents (VAEs), lerp for auto-encoder codes and VQ codes before quantization.

A plain auto-encoder samples through a Gaussian fitted to its training codes; the VQ-VAE alone
through its codes' frequencies; conditional models honour --digit.
"""
import math
import os
import shutil
import zipfile

from absl import flags, logging

from mnistgen_jax import cli

FLAGS = flags.FLAGS
GRID_CAP = 400  # samples in the PNG grid at most: 20 x 20 digits, 1.2 MB of pixels
MAX_SAMPLES = 10_000_000  # 7.8 GB of uint8 images: far more than any evaluation needs
flags.DEFINE_string("workdir", None, "a run written by mnistgen-train")
flags.DEFINE_integer("num", 64, f"number of samples (1..{MAX_SAMPLES})")
flags.DEFINE_string("out", None, f"PNG grid of the first {GRID_CAP} samples at most (default "
                    "digits.png, or none when --npy is given)")
flags.DEFINE_integer("digit", None, "conditional models: the digit to draw (0-9)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("npy", None, "write the samples as uint8 (num, 28, 28): PATH.npz holds "
                    "'images' and, for conditional models, 'labels'; PATH.npy the images alone "
                    "(labels beside it, PATH_labels.npy)")
flags.DEFINE_enum("order", "drawn", ["drawn", "by_digit"],
                  "order of the samples in --npy and the grid: as drawn (labels 0..9 cycling) "
                  "or grouped by digit")
flags.DEFINE_integer("batch_size", 1000, "samples drawn per compiled call (the memory used; "
                     "another batch size draws other samples)")
flags.DEFINE_string("interpolate", None, "i,j: a strip between test images i and j instead")
flags.DEFINE_integer("steps", 10, "--interpolate: decoded points along the path")
cli.define_sampling_flags()
cli.define_compilation_cache_flag()
cli.define_trust_flag()
flags.mark_flag_as_required("workdir")


def labels_path(npy: str) -> str:
  return npy[:-len(".npy")] + "_labels.npy"


def check_request() -> None:
  """The flags' one-line refusals, before any run is loaded."""
  if not 0 < FLAGS.num <= MAX_SAMPLES:
    raise ValueError(f"--num must be in 1..{MAX_SAMPLES}, got {FLAGS.num}")
  if FLAGS.batch_size <= 0:
    raise ValueError(f"--batch_size must be a positive integer, got {FLAGS.batch_size}")
  if FLAGS.out is not None or FLAGS.npy is None:
    cli.check_output("out", FLAGS.out or "digits.png", cli.image_extensions())
  if FLAGS.npy:
    cli.check_output("npy", FLAGS.npy, [".npy", ".npz"])
    folder = os.path.dirname(os.path.abspath(FLAGS.npy))
    need, free = FLAGS.num * 28 * 28 * 1.05, shutil.disk_usage(folder).free
    if need > free:
      raise ValueError(f"--npy={FLAGS.npy}: {FLAGS.num} samples need {need / 1e9:.1f} GB and "
                       f"{folder} has {free / 1e9:.1f} GB free: pass a smaller --num or another "
                       "folder")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cli.use_compilation_cache(FLAGS.compilation_cache)
  import numpy as np
  from mnistgen_jax import api, runs

  check_request()
  config = cli.with_sampling_flags(runs.load_config(FLAGS.workdir))
  config, _, model, state = runs.restore_run(FLAGS.workdir, config=config,
                                             trust_unverified=FLAGS.trust_unverified_checkpoint)
  run = api.Run(FLAGS.workdir, config, model, state.variables(), int(state.step))
  if FLAGS.digit is not None:
    if not run.conditional:
      raise ValueError(f"--digit needs a conditional model; {run.family!r} is unconditional "
                       "(try cond_vae, vqvae_cond_prior, cond_dcgan, or latent_flow over a "
                       "cond_vae run)")
    if not 0 <= FLAGS.digit < run.num_classes:
      raise ValueError(f"--digit must be in 0..{run.num_classes - 1}, got {FLAGS.digit}")
  if FLAGS.interpolate is not None:
    return interpolate(run)
  if not run.supports("sample"):
    raise ValueError(f"{FLAGS.workdir} holds a {config.family!r} run, which cannot sample")
  labels = run.labels_for(FLAGS.num, FLAGS.digit)
  order = (np.argsort(labels, kind="stable") if FLAGS.order == "by_digit"
           else np.arange(FLAGS.num))
  position = np.empty_like(order)
  position[order] = np.arange(FLAGS.num)  # where each drawn sample goes in the output
  shown = np.zeros((min(FLAGS.num, GRID_CAP), *run.image_shape), np.uint8)
  batches = run.sample_batches(FLAGS.num, FLAGS.seed, FLAGS.digit, FLAGS.batch_size,
                               progress=True)

  def keep_for_grid(start, images):
    where = position[start:start + len(images)]
    shown[where[where < len(shown)]] = images[where < len(shown)]

  written = []
  if FLAGS.npy:
    write_arrays(FLAGS.npy, batches, (FLAGS.num, *run.image_shape), position,
                 labels[order] if run.conditional else None, keep_for_grid)
    written.append(FLAGS.npy)
    if run.conditional and FLAGS.npy.endswith(".npy"):
      cli.write_output(labels_path(FLAGS.npy), lambda p: np.save(p, labels[order]))
      written.append(labels_path(FLAGS.npy))
  else:
    for start, images in batches:
      keep_for_grid(start, images)
  out = FLAGS.out or (None if FLAGS.npy else "digits.png")
  if out:
    write_grid(out, run, shown)
    written.append(out)
  print(f"wrote {FLAGS.num} samples of {config.family} ({FLAGS.order} order) to "
        f"{' and '.join(written)}")


def write_arrays(path, batches, shape, position, labels, each_batch) -> None:
  """The samples into `path` batch by batch (a memory-mapped .npy, inside the .npz if asked),
  atomically: a failure leaves no file, and never a cut one."""
  import numpy as np

  def write(tmp):
    images_file = tmp if tmp.endswith(".npy") else tmp + ".images.npy"
    try:
      images = np.lib.format.open_memmap(images_file, mode="w+", dtype=np.uint8, shape=shape)
      for start, batch in batches:
        images[position[start:start + len(batch)]] = batch
        each_batch(start, batch)
      images.flush()
      del images
      if images_file != tmp:  # np.savez's layout: one stored (uncompressed) .npy per array.
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
          archive.write(images_file, "images.npy")
          if labels is not None:
            with archive.open("labels.npy", "w", force_zip64=True) as f:
              np.lib.format.write_array(f, labels)
    finally:
      if images_file != tmp and os.path.exists(images_file):
        os.remove(images_file)
  cli.write_output(path, write)


def write_grid(path: str, run, shown) -> None:
  from mnistgen_jax import viz
  if run.conditional and FLAGS.digit is None and FLAGS.order == "drawn":
    ncol = 10 if len(shown) <= 100 else 20  # A multiple of 10: each column holds one digit.
  else:
    ncol = math.ceil(math.sqrt(len(shown)))
  cli.write_output(path, lambda p: viz.save_grid(p, shown, ncol=ncol))
  if len(shown) < FLAGS.num:
    print(f"{path} shows the first {len(shown)} of the {FLAGS.num} samples (the grid's cap)")


def parse_pair(text: str, size: int) -> tuple[int, int]:
  try:
    i, j = (int(v) for v in text.split(","))
  except ValueError:
    raise ValueError(f"--interpolate needs two test-image indices like 0,1; got {text!r}") from None
  for v in (i, j):
    if not 0 <= v < size:
      raise ValueError(f"--interpolate index {v} is outside the test set (0..{size - 1})")
  return i, j


def interpolate(run) -> None:
  import jax.numpy as jnp
  from mnistgen_jax import data, latent, viz
  from mnistgen_jax.train import to_float
  if not run.supports("decode"):
    raise ValueError(f"{run.family!r} has no encoder, so it cannot interpolate between test "
                     "images; use a model with one (ae, vae, conv_vae, cond_vae, vqvae)")
  if not 2 <= FLAGS.steps <= 1000:
    raise ValueError(f"--steps must be in 2..1000, got {FLAGS.steps}")
  config = run.config
  images, labels = data.load(config.data.dataset, "test", source=config.run.data_source,
                             data_dir=config.run.data_dir or None)
  i, j = parse_pair(FLAGS.interpolate, len(images))
  strip = latent.interpolate(run.model, run.variables, to_float(jnp.asarray(images[[i, j]])),
                             jnp.asarray(labels[[i, j]]), FLAGS.steps,
                             run.model.latent_interpolation, run.conditional)
  out = FLAGS.out or "digits.png"
  cli.write_output(out, lambda path: viz.save_grid(path, strip, ncol=FLAGS.steps + 2))
  print(f"wrote a {run.model.latent_interpolation} strip of {run.family} between test images "
        f"{i} and {j} (digits {labels[i]} and {labels[j]}) to {out}")


def run():
  """Console script `mnistgen-generate`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
