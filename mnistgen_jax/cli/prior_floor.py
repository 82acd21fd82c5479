r"""The best sample FID any prior over an encoder run's codes can reach: decode the exact codes of
training images (a perfect prior draws exactly those), and the same codes with Gaussian noise of
a few code standard deviations (a prior that is off by that much).

  mnistgen-prior-floor --workdir=runs/ae --sigmas=0,0.1,0.2,0.3

fid_lenet against the MNIST test set, as every sample FID here. A run's reconstruction FID
compares test images with their own reconstructions, so it sits below this floor.
"""

from absl import flags, logging

from mnistgen_jax import cli, data

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a finished run of an encoder family (ae, vae, ...)")
flags.DEFINE_list("sigmas", ["0", "0.1", "0.2", "0.3"], "noise scales, in code standard deviations")
flags.DEFINE_integer("num", 10000, "training images to encode and decode (the first N)")
cli.define_trust_flag()
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mnistgen_jax import runs, viz
  from mnistgen_jax import train as train_lib
  from mnistgen_jax import evaluation
  from mnistgen_jax.models import supports

  sigmas = [float(s) for s in FLAGS.sigmas]
  if FLAGS.num <= 0 or any(s < 0 for s in sigmas):
    raise ValueError("--num must be positive and --sigmas >= 0")
  config, _, model, state = runs.restore_run(
      FLAGS.workdir, trust_unverified=FLAGS.trust_unverified_checkpoint)
  if not (supports(model, "encode") and supports(model, "decode")):
    raise ValueError(f"{FLAGS.workdir} holds a {config.family!r} run, which has no codes to "
                             "decode; pass an encoder family's run")
  data_kw = dict(source=config.run.data_source, data_dir=config.run.data_dir or None)
  images, labels = data.load(config.data.dataset, "train", limit=FLAGS.num, **data_kw)
  ref = evaluation.Reference.load(config.data.dataset, **data_kw)
  variables = state.variables()
  codes = train_lib.make_applier(model, "encode", 1000)(variables, images, labels)
  scale = codes.std(0)
  decode = jax.jit(lambda z, y: model.apply(variables, z, y, method="decode"))
  for sigma in sigmas:
    noisy = codes + sigma * scale * jax.random.normal(jax.random.PRNGKey(0), codes.shape)
    decoded = np.concatenate([
        viz.to_uint8(decode(noisy[i:i + 1000], jnp.asarray(labels[i:i + 1000])))
        for i in range(0, len(codes), 1000)])
    print(f"{FLAGS.workdir}: codes + N(0, ({sigma} sd)^2) -> fid_lenet "
          f"{ref.fid(decoded, 'decoded features'):.2f}", flush=True)


def run():
  """Console script `mnistgen-prior-floor`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
