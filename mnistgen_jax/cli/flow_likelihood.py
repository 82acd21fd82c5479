r"""Bits per dimension of MNIST test digits under a pixel-space flow (flow, cond_flow): the exact
likelihood of its ODE (instantaneous change of variables, Hutchinson's trace estimator) on
uniformly dequantized pixels, the number normalizing flows and PixelCNN report.

  mnistgen-flow-likelihood --workdir=runs/cond_flow --num=1000 --steps=32

Uses the run's EMA weights and its --solver; cond_flow gives -log2 p(x | digit) / 784 (guidance 1).
Prints the mean with its standard error over the images and adds it to the run's eval.json.
"""
import time

from absl import flags, logging

from mnistgen_jax import cli, data

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a finished flow or cond_flow run")
flags.DEFINE_integer("num", 1000, "test images (the first N)")
flags.DEFINE_integer("steps", 32, "ODE steps from the data back to the noise")
flags.DEFINE_integer("probes", 1, "Rademacher probes of the trace estimator per image")
flags.DEFINE_integer("batch_size", 250, "images per jitted call")
flags.DEFINE_integer("seed", 0, "dequantization and probe seed")
cli.define_trust_flag()
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  from mnistgen_jax import runs
  from mnistgen_jax.metrics import likelihood
  from mnistgen_jax.models import supports

  for name in ("num", "steps", "probes", "batch_size"):
    if FLAGS[name].value <= 0:
      raise ValueError(f"--{name} must be a positive integer, got {FLAGS[name].value}")
  config, _, model, state = runs.restore_run(
      FLAGS.workdir, trust_unverified=FLAGS.trust_unverified_checkpoint)
  if not supports(model, "log_density"):
    raise ValueError(f"{FLAGS.workdir} holds a {config.family!r} run, which has no ODE density; "
                             "this is for flow and cond_flow runs")
  images, labels = data.load(config.data.dataset,
                             "test",
                             limit=FLAGS.num,
                             source=config.run.data_source,
                             data_dir=config.run.data_dir or None)
  start = time.perf_counter()
  mean, stderr = likelihood.dequantized_bits_per_dim(
      model, state.variables(), images, labels, jax.random.PRNGKey(FLAGS.seed), FLAGS.steps,
      FLAGS.probes, FLAGS.batch_size)
  seconds = time.perf_counter() - start
  result = {"bits_per_dim": mean, "standard_error": stderr, "num_images": len(images),
            "steps": FLAGS.steps, "solver": config.sampling.solver, "probes": FLAGS.probes,
            "seconds": round(seconds, 1)}
  with runs.lock(FLAGS.workdir):  # Refused (one line) while a training or evaluation writes it.
    runs.update_eval_json(FLAGS.workdir, {"ode_likelihood": result})
  given = " | digit" if model.conditional else ""
  print(
      f"{config.family}: -log2 p(x{given}) = {mean:.4f} +- {stderr:.4f} bits/dim on {len(images)} "
      f"dequantized test images ({config.sampling.solver}, {FLAGS.steps} steps, "
      f"{FLAGS.probes} probe(s), {seconds:.0f} s)")


def run():
  """Console script `mnistgen-flow-likelihood`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
