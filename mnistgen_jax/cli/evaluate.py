r"""Evaluates a trained run of any family and adds the results to its eval.json.

  mnistgen-evaluate --workdir=runs/conv_vae

FID, KID and precision/recall use the committed LeNet classifier's 128-d features (fid_lenet,
...), not Inception-v3: they are comparable with each other, not with Inception FIDs in papers.
"""
import os
import time

from absl import flags, logging

from mnistgen_jax import cli, runs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run written by mnistgen-train")
flags.DEFINE_integer("num_samples", 10000, "samples drawn for the sample metrics")
flags.DEFINE_integer("iwae_samples", 50, "importance samples K of the IWAE bound (0: skip)")
flags.DEFINE_integer("iwae_images", 0, "the IWAE bound of the first N test images only (0: all)")
flags.DEFINE_integer("iwae_decodes_per_pass", None, "codes the IWAE bound decodes at a time "
                     "(speed only, same numbers; 0: all at once; default: 1000 on CPU, where "
                     "that stays in cache, all at once on GPU/TPU)")
flags.DEFINE_integer("reconstruction_images", 0, "the reconstruction FID of the first N test "
                     "images only (0: all; pixel-by-pixel decoders such as pixel_vae are slow)")
flags.DEFINE_bool("calibration", True, "also report the calibration rows (the same for every run "
                  "of a dataset: computed once, then read from the cache directory)")
flags.DEFINE_bool("recalibrate", False, "compute the calibration rows anew, not from the cache")
flags.DEFINE_bool("progress", True, "progress bars")
cli.define_sampling_flags()
cli.define_compilation_cache_flag()
cli.define_trust_flag()
flags.mark_flag_as_required("workdir")

SAMPLE_COLUMNS = ["fid_lenet", "kid_lenet", "precision", "recall", "density", "coverage",
                  "classifier_score"]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from mnistgen_jax import evaluation
  evaluation.check_num_samples(FLAGS.num_samples)
  if FLAGS.iwae_images < 0:
    raise ValueError(f"--iwae_images must be >= 0 (0: all test images), got {FLAGS.iwae_images}")
  if FLAGS.reconstruction_images < 0:
    raise ValueError("--reconstruction_images must be >= 0 (0: all test images), got "
                     f"{FLAGS.reconstruction_images}")
  if FLAGS.iwae_decodes_per_pass is not None and FLAGS.iwae_decodes_per_pass < 0:
    raise ValueError("--iwae_decodes_per_pass must be >= 0 (0: all at once), got "
                     f"{FLAGS.iwae_decodes_per_pass}")
  config = cli.with_sampling_flags(runs.load_config(FLAGS.workdir))
  # The run's lock for the whole evaluation: refused in one line while training (or another
  # evaluation) writes the run, so neither result overwrites the other.
  with runs.lock(FLAGS.workdir):
    _evaluate(config)


def _evaluate(config):
  import jax
  from mnistgen_jax import evaluation, report
  # Before minutes of work that could not be saved (a read-only or full workdir).
  cli.check_output("workdir", os.path.join(FLAGS.workdir, "eval.json"))
  runs.saved_eval_json(FLAGS.workdir)  # One that cannot be merged into is refused before, too.
  data_kw = dict(source=config.run.data_source, data_dir=config.run.data_dir or None)
  start = time.perf_counter()
  ref = evaluation.Reference.load(config.data.dataset, progress=FLAGS.progress, **data_kw)
  reference_seconds = time.perf_counter() - start
  pictures = {}
  result = evaluation.evaluate_run(FLAGS.workdir, FLAGS.num_samples, FLAGS.iwae_samples,
                                   progress=FLAGS.progress, ref=ref, config=config,
                                   iwae_images=FLAGS.iwae_images,
                                   iwae_decodes_per_pass=FLAGS.iwae_decodes_per_pass,
                                   reconstruction_images=FLAGS.reconstruction_images,
                                   pictures=pictures,
                                   trust_unverified=FLAGS.trust_unverified_checkpoint)
  result["seconds"] = {"reference": round(reference_seconds, 2), **result["seconds"]}
  # How the samples were drawn (the run's own settings, or the flags that changed them).
  result["sampling"] = config.sampling.to_dict()
  if FLAGS.calibration:
    calibration_start = time.perf_counter()
    result["calibration"], result["calibration_source"] = evaluation.cached_calibration(
        ref, jax.random.PRNGKey(0), FLAGS.num_samples, recompute=FLAGS.recalibrate, **data_kw)
    result["seconds"]["calibration"] = round(time.perf_counter() - calibration_start, 2)
  result["seconds"]["total"] = round(time.perf_counter() - start, 2)

  path = evaluation.save_evaluation(FLAGS.workdir, result)  # An OS error: one line (run_binary).
  # TensorBoard at the run's step: this evaluation's figures (not the calibration rows, which
  # are of real images) and its pictures.
  runs.write_summaries(FLAGS.workdir, result["step"],
                       {k: v for k, v in evaluation.summary_scalars(result).items()
                        if not k.startswith("eval/calibration")},
                       {f"eval/{k}": v for k, v in pictures.items()})

  rows, name = [], config.family
  if "reconstructions" in result:
    count = result["reconstructions"].get("images")
    rows.append([f"{name}: reconstructions of {f'{count} ' if count else ''}test",
                 result["reconstructions"]["fid_lenet"]]
                + [None] * (len(SAMPLE_COLUMNS) - 1))
  if "samples" in result:
    rows.append([f"{name}: {FLAGS.num_samples} samples"]
                + [result["samples"][c] for c in SAMPLE_COLUMNS])
  for label, metrics in result.get("calibration", {}).items():
    rows.append([f"calibration: {label}"] + [metrics[c] for c in SAMPLE_COLUMNS])
  print(report.markdown_table([f"vs {config.data.dataset} test"] + SAMPLE_COLUMNS, rows))
  source = result.get("calibration_source", "")
  if source.startswith("cache "):
    print(f"calibration rows: read from {source.removeprefix('cache ')} (--recalibrate: anew)")
  for key, value in result.items():
    if key.startswith("iwae_nll") and not key.endswith("_stderr"):
      images = f" (first {result['iwae_images']} test images)" if "iwae_images" in result else ""
      stderr = result.get(f"{key}_stderr")
      spread = f" +- {stderr:.3f} (standard error over images)" if stderr is not None else ""
      print(f"{key}: {value:.3f}{spread} nats{images}")
  if "label_accuracy" in result.get("samples", {}):
    print(f"label accuracy of conditional samples: {result['samples']['label_accuracy']:.4f}")
  print("seconds: " + ", ".join(f"{part} {t:.1f}" for part, t in result["seconds"].items()))
  print(f"written to {path}")


def run():
  """Console script `mnistgen-evaluate`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
