r"""Serialises a run's sampler with jax.export: digits from a key, with jax alone (no mnistgen_jax).

  mnistgen-export --workdir=runs/cond_vae --out=cond_vae.jaxexport

Load and call it anywhere jax (and flatbuffers) is installed, on CPU, GPU or TPU:

  import jax, numpy as np
  sampler = jax.export.deserialize(open("cond_vae.jaxexport", "rb").read())
  images = sampler.call(jax.random.PRNGKey(0), np.arange(16, dtype=np.int32) % 10)

Arguments: a raw uint32[2] key, and int32[n] digit labels (any n; unconditional models read only
their count). Result: float32[n, 28, 28, 1] in [0, 1]. The weights (and a fitted prior, for
families sampling through one) are baked in as constants.
"""

from absl import flags, logging

from mnistgen_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run written by mnistgen-train")
flags.DEFINE_string("out", None, "file to write the serialised sampler to")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "platforms to lower for")
flags.DEFINE_bool("overwrite", False, "replace --out if it exists")
cli.define_trust_flag()
cli.define_sampling_flags()
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from mnistgen_jax import runs
  from mnistgen_jax.export import export_sampler
  from mnistgen_jax.models import supports

  cli.check_output("out", FLAGS.out, overwrite=FLAGS.overwrite)
  unknown = sorted(set(FLAGS.platforms) - set(PLATFORMS))
  if unknown or not FLAGS.platforms:
    raise ValueError(f"--platforms={','.join(FLAGS.platforms)}: {', '.join(unknown) or 'none'} "
                             f"is not a platform jax exports for; choose among {', '.join(PLATFORMS)}")
  config = cli.with_sampling_flags(runs.load_config(FLAGS.workdir))
  config, _, model, state = runs.restore_run(FLAGS.workdir, config=config,
                                             trust_unverified=FLAGS.trust_unverified_checkpoint)
  if not supports(model, "sample"):
    raise ValueError(f"{FLAGS.workdir} holds a {config.family!r} run, which cannot sample")
  variables = state.variables()  # A fitted sampling prior, if any, is in the checkpoint.
  blob = export_sampler(model, variables, FLAGS.platforms).serialize()

  def write(path):
    with open(path, "wb") as f:
      f.write(blob)
  cli.write_output(FLAGS.out, write)  # Never a half-written file under the final name.
  kind = "one digit per sample" if model.conditional else "only their count is used"
  print(f"wrote {FLAGS.out} ({len(blob) / 1e6:.1f} MB): {config.family} sampler for "
        f"{', '.join(FLAGS.platforms)}; call with a uint32[2] key and int32[n] labels ({kind})")


def run():
  """Console script `mnistgen-export`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
