r"""Trains the evaluation classifier (LeNet) for a dataset and commits its weights to the package.

  mnistgen-train-classifier --dataset=mnist

Writes mnistgen_jax/metrics/weights/lenet_<dataset>.msgpack and its sha256, test accuracy and this
command into weights/manifest.json. Same seed, same weights (on the same platform).
"""
import hashlib
import json
import os

from absl import flags, logging

from mnistgen_jax import cli, configs

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "mnist | fashion_mnist")
flags.DEFINE_string("workdir", None, "training workdir (default runs/lenet_<dataset>)")
flags.DEFINE_integer("num_epochs", None, "epochs (default: the lenet family's)")
flags.DEFINE_integer("seed", 0, "random seed")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import flax.serialization
  import jax
  from mnistgen_jax import runs, trainer
  from mnistgen_jax.metrics import features

  overrides = dict(dataset=FLAGS.dataset, seed=FLAGS.seed)
  if FLAGS.num_epochs is not None:
    overrides["num_epochs"] = FLAGS.num_epochs
  workdir = FLAGS.workdir or f"runs/lenet_{FLAGS.dataset}"
  config = configs.get_config("lenet", **overrides)
  result = trainer.train_and_evaluate(config, workdir)
  state = runs.restore_run(workdir)[3]
  raw = flax.serialization.msgpack_serialize(jax.device_get(state.params))
  name = f"lenet_{FLAGS.dataset}.msgpack"
  os.makedirs(features.WEIGHTS_DIR, exist_ok=True)
  with open(os.path.join(features.WEIGHTS_DIR, name), "wb") as f:
    f.write(raw)
  manifest = features.read_manifest()
  accuracy = 1.0 - result["test"]["error"]
  manifest[FLAGS.dataset] = {
      "file": name, "sha256": hashlib.sha256(raw).hexdigest(), "test_accuracy": round(accuracy, 5),
      "num_params": result["num_params"], "epochs": config.run.num_epochs, "seed": FLAGS.seed,
      "command": f"mnistgen-train-classifier --dataset={FLAGS.dataset} "
                 f"--seed={FLAGS.seed} --num_epochs={config.run.num_epochs}"}
  with open(features.MANIFEST, "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  print(f"test accuracy {accuracy:.4%}; weights {name} sha256 {manifest[FLAGS.dataset]['sha256']}")


def run():
  """Console script `mnistgen-train-classifier`."""
  cli.run_binary(main)


if __name__ == "__main__":
  run()
