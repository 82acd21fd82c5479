r"""Side-by-side latent-space figure of several runs: test-set codes coloured by digit.

  mnistgen-latent-space --workdirs=runs/vae,runs/cond_vae --out=latent_vae_vs_cvae.png

2-D codes are plotted directly; larger ones on their first two principal components (PCA).
"""

from absl import flags, logging

from mnistgen_jax import cli, data

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "runs written by mnistgen-train, comma-separated")
flags.DEFINE_string("out", "latent_space.png", "PNG to write")
flags.DEFINE_integer("num", 5000, "test images to encode (the first N)")
cli.define_trust_flag()
flags.mark_flag_as_required("workdirs")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import numpy as np
  from mnistgen_jax import report, runs, viz
  from mnistgen_jax import train as train_lib
  from mnistgen_jax.models import supports

  panels = []
  if FLAGS.num <= 0:
    raise ValueError(f"--num must be a positive integer, got {FLAGS.num}")
  for workdir in FLAGS.workdirs:
    config, _, model, state = runs.restore_run(
        workdir, trust_unverified=FLAGS.trust_unverified_checkpoint)
    if not supports(model, "encode"):
      raise ValueError(f"{workdir} holds a {config.family!r} run, which has no encoder to plot")
    images, labels = data.load(config.data.dataset, "test", limit=FLAGS.num,
                               source=config.run.data_source, data_dir=config.run.data_dir or None)
    codes = train_lib.make_applier(model, "encode", min(FLAGS.num, 1000))(
        state.variables(), images, labels)
    panels.append((np.asarray(codes), labels, report.latent_title(config, codes)))
  viz.save_latent_scatter(FLAGS.out, panels)
  print(f"wrote {FLAGS.out}: {', '.join(p[2] for p in panels)}")


def run():
  """Console script `mnistgen-latent-space`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
