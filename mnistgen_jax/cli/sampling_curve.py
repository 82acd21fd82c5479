r"""Sample quality against ODE steps for a flow-matching run (flow, cond_flow, latent_flow).

  mnistgen-sampling-curve --workdir=runs/cond_flow --steps=4,8,16,32,64

For each number of steps (and each --solvers entry) it draws --num_samples samples with the run's
EMA weights, times the jitted sampler (compilation excluded: a warm-up batch runs first), and scores
the samples like mnistgen-evaluate (fid_lenet, precision/recall, digit accuracy). Writes
sampling_curve.json, sampling_curve.md (a table) and sampling_curve.png (FID and samples/s vs steps)
into the workdir, and prints the table.
"""
import os

from absl import flags, logging

from mnistgen_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a flow-matching run written by mnistgen-train")
flags.DEFINE_list("steps", ["4", "8", "16", "32", "64"], "ODE steps to try")
flags.DEFINE_list("solvers", None, "ODE solvers to try (euler, heun); default: the run's")
flags.DEFINE_integer("num_samples", 10000, "samples per setting")
flags.DEFINE_integer("batch_size", 1000, "samples per jitted sampler call")
flags.DEFINE_bool("progress", True, "progress bars")
cli.define_sampling_flags()  # --guidance, --solver (the default of --solvers), ...
cli.define_compilation_cache_flag()
cli.define_trust_flag()
flags.DEFINE_string("name", "sampling_curve", "basename of the .json, .md and .png written")
flags.mark_flag_as_required("workdir")

COLUMNS = ["solver", "steps", "network evals", "samples/s", "fid_lenet", "precision", "recall",
           "label_accuracy"]


def _positive_ints(values, name):
  try:
    out = [int(v) for v in values]
  except ValueError:
    out = []
  if not out or min(out) <= 0:
    raise ValueError(f"--{name} must be positive integers, e.g. 4,8,16; got {','.join(values)}")
  return out


def measure(config, ref, num_samples, batch_size, progress):
  """One setting: (samples/s of the jitted sampler after warm-up, sample metrics)."""
  import jax
  import jax.numpy as jnp
  from mnistgen_jax import cpu_compiler, evaluation, report, runs

  _, _, model, state = runs.restore_run(FLAGS.workdir, config=config,
                                        trust_unverified=FLAGS.trust_unverified_checkpoint)
  variables = state.variables()
  sampler = report.make_sampler(model, cpu_compiler.of_config(config))
  # Compiled before the clock starts, for the batch shape that generate uses.
  jax.block_until_ready(sampler(variables, jnp.zeros((batch_size,), jnp.int32),
                                jax.random.PRNGKey(0)))
  metrics, seconds, _ = evaluation.score_samples(ref, config, model, variables, num_samples,
                                                progress, batch_size, sampler)
  return num_samples / seconds, metrics


def plot(rows, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  rate_ax = ax.twinx()
  for solver in sorted({r["solver"] for r in rows}):
    rs = [r for r in rows if r["solver"] == solver]
    ax.plot([r["steps"] for r in rs], [r["fid_lenet"] for r in rs], "o-", label=f"FID, {solver}")
    rate_ax.plot([r["steps"] for r in rs], [r["samples/s"] for r in rs], "s--", alpha=0.5,
                 label=f"samples/s, {solver}")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  rate_ax.set_yscale("log")
  ax.set_xlabel("ODE steps")
  ax.set_ylabel("fid_lenet (10k samples vs test)")
  rate_ax.set_ylabel("samples / s")
  lines = ax.get_legend_handles_labels()
  more = rate_ax.get_legend_handles_labels()
  ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
  ax.grid(alpha=0.3, which="both")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from mnistgen_jax import configs, evaluation, flow, report, runs
  steps = _positive_ints(FLAGS.steps, "steps")
  if FLAGS.num_samples <= 0 or FLAGS.batch_size <= 0:
    raise ValueError("--num_samples and --batch_size must be positive")
  config = runs.load_config(FLAGS.workdir)
  if "sample_steps" not in config.sampling:
    raise ValueError(f"{FLAGS.workdir} is a {config.family!r} run; sampling_curve is for flow "
                             "families (flow, cond_flow, latent_flow)")
  config = cli.with_sampling_flags(config)
  solvers = FLAGS.solvers or [config.sampling.solver]
  data_kw = dict(source=config.run.data_source, data_dir=config.run.data_dir or None)
  ref = evaluation.Reference.load(config.data.dataset, progress=FLAGS.progress, **data_kw)
  rows = []
  for solver in solvers:
    for n in steps:
      config.sampling.solver, config.sampling.sample_steps = solver, n
      configs.validate(config)
      rate, metrics = measure(config, ref, FLAGS.num_samples, FLAGS.batch_size, FLAGS.progress)
      row = {"solver": solver, "steps": n,
             "network evals": flow.function_evaluations(n, solver), "samples/s": rate, **metrics}
      rows.append(row)
      digits = (f", digit read as asked {metrics['label_accuracy']:.1%}"
                if "label_accuracy" in metrics else "")
      print(f"{solver} {n:3d} steps: fid_lenet {metrics['fid_lenet']:.2f}, recall "
            f"{metrics['recall']:.3f}{digits}, {rate:.0f} samples/s", flush=True)

  device = jax.devices()[0]
  meta = {"workdir": FLAGS.workdir, "num_samples": FLAGS.num_samples,
          "guidance": config.sampling.get("guidance"),
          "autoguidance": config.sampling.get("autoguidance"),
          "device": f"{device.platform}: {device.device_kind}",
          "rows": rows}
  base = os.path.join(FLAGS.workdir, FLAGS.name)
  runs.write_json(base + ".json", meta)
  table = report.markdown_table(
      COLUMNS, [[r.get(c) for c in COLUMNS] for r in rows])
  with open(base + ".md", "w") as f:
    f.write(f"{FLAGS.num_samples} samples per row, {meta['device']}\n\n{table}\n")
  plot(rows, base + ".png")
  print(table)
  print(f"wrote {base}.json, .md, .png")


def run():
  """Console script `mnistgen-sampling-curve`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
