r"""Speed of every family on this machine, against the f32 matmul roofline measured in-process.

  mnistgen-benchmark --out=runs/benchmark

Per family (default config, batch 128, real MNIST, all visible devices): train-step img/s after
warm-up (median over 100-step chunks of one full epoch), achieved GFLOP/s (XLA's compiled cost
analysis of one step x steps/s) and its share of the roofline, sampling img/s, and the epoch's
wall time. Then FID wall time (features, statistics, distance) of 10000 generated vs 10000 real
images, and the MLP VAE recipe's time to a test negative ELBO <= 106.7 nats.
Writes benchmark.json and benchmark.md into --out.
"""
import os
import statistics
import tempfile
import time

from absl import flags, logging

from mnistgen_jax import cli
FLAGS = flags.FLAGS
flags.DEFINE_string("out", "runs/benchmark", "directory for benchmark.json and benchmark.md")
flags.DEFINE_list("families", ["ae", "vae", "conv_vae", "cond_vae", "vqvae", "vqvae_prior",
                               "dcgan", "cond_dcgan"], "families to time")
flags.DEFINE_integer("repeats", 5, "timed repetitions of the matmul, sampling and FID")
flags.DEFINE_bool("vae_recipe", True, "also time the MLP VAE recipe to <= 106.7 nats")
flags.DEFINE_string("preset", "", "time the families at a parameter budget (configs.PRESETS)")
flags.DEFINE_integer("max_steps", 0, "time only the first N train steps of the epoch (0: all; "
                     "then 'epoch s' is left empty)")
flags.DEFINE_string("train_loop", "", "scan | steps for every family ('': each one's default)")
flags.DEFINE_bool("ynn_fusions", None, "XLA:CPU's YNNPACK fusions on (--ynn_fusions) or off "
                  "(--noynn_fusions) for every family (unset: each one's config; CPU only)")
flags.DEFINE_bool("fid", True, "also time FID of 10,000 vs 10,000 images")
flags.DEFINE_integer("sample_images", 1000, "images per timed sampler call (pixel_vae draws "
                     "pixel by pixel: about 2.5 minutes per 1,000 on 2 CPU cores)")

HEADER = ["family", "params", "train img/s", "GFLOP/s", "% of roofline", "MFLOP/img",
          "sample img/s", "epoch s"]


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of fn() (which must block until its result is ready)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_roofline(repeats: int, n: int = 2048) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  matmul(a).block_until_ready()
  return 2 * n**3 / median_seconds(lambda: matmul(a).block_until_ready(), max(repeats, 10)) / 1e9


def step_flops(step, state, x, y) -> float:
  import jax
  cost = jax.jit(step).lower(state, x, y).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def bench_family(name: str, train, stage1_dirs: dict, repeats: int, preset: str,
                 max_steps: int = 0, train_loop: str = "", sample_images: int = 1000,
                 ynn_fusions: bool | None = None) -> dict:
  import jax
  import jax.numpy as jnp
  from mnistgen_jax import configs, cpu_compiler, models, report, trainer
  stage1_families = models.get(name).stage1_families
  overrides = {"stage1_workdir": stage1_dirs[stage1_families[0]]} if stage1_families else {}
  if train_loop:
    overrides["train_loop"] = train_loop
  if ynn_fusions is not None:
    overrides["ynn_fusions"] = ynn_fusions
  config = configs.get_config(name, preset=preset, **overrides)
  setup = trainer.setup(config, len(train[0]))
  family, model, mesh = setup.family, setup.model, setup.mesh
  steps_per_epoch = setup.steps_per_epoch
  state, images, labels, batches = setup.placed_inputs(*train)
  flops = step_flops(setup.step, state, *setup.first_batch(images, labels, batches))
  run = setup.new_runner()
  options = cpu_compiler.of_config(config)
  timed_steps = min(max_steps, steps_per_epoch) if max_steps else steps_per_epoch
  chunk = min(100, timed_steps)
  rest = timed_steps % chunk
  for length in {chunk, rest} - {0}:  # Compile both chunk lengths before timing.
    state, metrics = run(state, images, labels, batches, 0, length)
    jax.block_until_ready(metrics)
  rates, start_epoch = [], time.perf_counter()
  for start in range(0, timed_steps, chunk):
    length = min(chunk, timed_steps - start)
    start_chunk = time.perf_counter()
    state, metrics = run(state, images, labels, batches, start, length)
    jax.block_until_ready(metrics)
    if length == chunk:
      rates.append(length * config.train.batch_size / (time.perf_counter() - start_chunk))
  epoch_seconds = (time.perf_counter() - start_epoch) if timed_steps == steps_per_epoch else None
  img_per_s = statistics.median(rates)

  variables = state.variables()
  fit_prior = family.training.fit_prior(model, config)
  if fit_prior is not None:  # As training does before each checkpoint.
    variables = fit_prior(variables, train[0][:2000], train[1][:2000])
  sampler = report.make_sampler(model, options)
  sample_labels = jnp.arange(sample_images, dtype=jnp.int32) % 10
  sampler(variables, sample_labels, jax.random.PRNGKey(1)).block_until_ready()
  sample_s = median_seconds(
      lambda: sampler(variables, sample_labels, jax.random.PRNGKey(1)).block_until_ready(), repeats)
  return {"num_params": int(sum(p.size for p in jax.tree.leaves(state.params))),
          "train_loop": config.run.train_loop, "ynn_fusions": config.run.ynn_fusions,
          "batch_size": config.train.batch_size, "devices": mesh.size,
          "train_img_per_s": img_per_s, "flops_per_step": flops,
          "gflops_per_s": flops * img_per_s / config.train.batch_size / 1e9,
          "sample_img_per_s": sample_images / sample_s, "sample_images": sample_images,
          "epoch_seconds": epoch_seconds}


def fid_wall_time(train, repeats: int) -> dict:
  """Seconds for FID of 10000 'generated' (here: training) vs 10000 real test images,
  features of both sets included."""
  import numpy as np
  from mnistgen_jax import data
  from mnistgen_jax.metrics import features, fid
  net, variables = features.load_classifier("mnist")
  extract = features.make_extractor(net)
  test = data.load("mnist", "test")[0]
  generated = np.asarray(train[0][:10000])

  def full_fid():
    stats = [fid.stats_of(np.asarray(extract(variables, images, progress=False)[0]))
             for images in (generated, test)]
    return fid.fid_from_stats(*stats)
  value = full_fid()  # Warm-up (compilation).
  return {"fid_10k_vs_10k_seconds": median_seconds(full_fid, repeats), "fid_value": value}


def vae_recipe() -> dict:
  """The MLP VAE recipe (default config, 10 epochs): first epoch at <= 106.7 nats and when."""
  import json
  from mnistgen_jax import configs, trainer
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(configs.get_config("vae"), workdir, print_fn=lambda s: None)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      tests = [r for r in map(json.loads, f) if r["split"] == "test"]
  hit = next((r for r in tests if r["loss"] <= 106.7), None)
  return {"epochs": [(r["epoch"], round(r["loss"], 3), r["train_seconds"]) for r in tests],
          "reached_106_7_at_epoch": hit and hit["epoch"],
          "reached_106_7_after_seconds": hit and hit["train_seconds"]}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  from mnistgen_jax import configs, data, models, report, runs, trainer

  os.makedirs(FLAGS.out, exist_ok=True)
  train = data.load("mnist", "train")
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  result = {"device": device, "jax": jax.__version__, "families": {}}
  result["matmul_gflops_per_s"] = roofline = matmul_roofline(FLAGS.repeats)
  print(f"{device}: f32 2048^3 matmul roofline {roofline:.1f} GFLOP/s", flush=True)
  with tempfile.TemporaryDirectory() as stage1_root:
    stage1_dirs = {}  # Priors need a (tiny) trained stage-1 run to build on.
    for name in FLAGS.families:
      for first in models.get(name).stage1_families[:1]:
        if first not in stage1_dirs:
          stage1_dirs[first] = os.path.join(stage1_root, first)
          trainer.train_and_evaluate(
              configs.get_config(first, preset=FLAGS.preset, train_size=128, num_epochs=1),
              stage1_dirs[first], print_fn=lambda s: None)
    for name in FLAGS.families:
      r = bench_family(name, train, stage1_dirs, FLAGS.repeats, FLAGS.preset, FLAGS.max_steps,
                       FLAGS.train_loop, FLAGS.sample_images, FLAGS.ynn_fusions)
      r["roofline_share"] = r["gflops_per_s"] / roofline
      result["families"][name] = r
      epoch = (f"epoch {r['epoch_seconds']:.1f} s" if r["epoch_seconds"]
               else f"first {FLAGS.max_steps} steps timed, not a whole epoch")
      print(f"{name}: {r['train_img_per_s']:,.0f} img/s train, {r['gflops_per_s']:.1f} GFLOP/s "
            f"({100 * r['roofline_share']:.0f} % of roofline), {r['sample_img_per_s']:,.0f} "
            f"img/s sampling, {epoch}", flush=True)
  if FLAGS.fid:
    result.update(fid_wall_time(train, FLAGS.repeats))
    print(f"FID 10k vs 10k: {result['fid_10k_vs_10k_seconds']:.2f} s", flush=True)
  if FLAGS.vae_recipe:
    result["vae_recipe"] = vae_recipe()
    print(f"vae recipe: {result['vae_recipe']}", flush=True)

  rows = [[n, f"{r['num_params']:,}", f"{r['train_img_per_s']:,.0f}", r["gflops_per_s"],
           f"{100 * r['roofline_share']:.0f}", r["flops_per_step"] / r["batch_size"] / 1e6,
           f"{r['sample_img_per_s']:,.0f}", r["epoch_seconds"] or ""]
          for n, r in result["families"].items()]
  facts = [f"{device}, jax {jax.__version__}, preset {FLAGS.preset or 'none (defaults)'}",
           f"train loop {FLAGS.train_loop or 'each family default'}",
           "YNN fusions " + ({None: "each family default", True: "on", False: "off"}
                             [FLAGS.ynn_fusions]),
           f"roofline (f32 2048^3 matmul) {roofline:.1f} GFLOP/s"]
  if FLAGS.fid:
    facts.append(f"FID 10k vs 10k {result['fid_10k_vs_10k_seconds']:.2f} s")
  table = "; ".join(facts) + "\n\n" + report.markdown_table(HEADER, rows)
  runs.write_json(os.path.join(FLAGS.out, "benchmark.json"), result)
  with open(os.path.join(FLAGS.out, "benchmark.md"), "w") as f:
    f.write(table + "\n")
  print(table)


def run():
  """Console script `mnistgen-benchmark`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
