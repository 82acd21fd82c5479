r"""sha256 of every family's train-step program as the trainer compiles it (StableHLO text of
trainer.setup's step, lowered through its chunk runner for a scanned loop; source locations
stripped). Two checkouts that print the same digest for a family run the same computation, so
their train img/s can differ by noise only.

  python -m experiments.step_programs --stage1=conv_vae:runs/cv,vqvae:runs/vq > programs.json
"""
import hashlib
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from mnistgen_jax import configs, data, models, trainer
from mnistgen_jax import train as train_lib

FLAGS = flags.FLAGS
flags.DEFINE_list("stage1", [], "FAMILY:WORKDIR of a finished stage-1 run for each family a "
                  "prior builds on (the priors are skipped without one)")


def program_text(config, train) -> str:
  setup = trainer.setup(config, len(train[0]))
  inputs = np.asarray(setup.family.training.train_inputs(
      setup.model, config, setup.state.variables(), *train))
  if config.run.train_loop == "scan":
    batches = train_lib.epoch_batches(jax.random.PRNGKey(0), 0, len(inputs),
                                      config.train.batch_size)
    lowered = setup.new_runner().lower(setup.state, jnp.asarray(inputs), jnp.asarray(train[1]),
                                       batches, 0, 2)
  else:
    x = jnp.asarray(inputs[:config.train.batch_size])
    x = train_lib.to_float(x) if x.dtype == jnp.uint8 else x
    lowered = jax.jit(setup.step).lower(setup.state, x,
                                        jnp.asarray(train[1][:config.train.batch_size]))
  return re.sub(r"#loc[0-9]* = .*\n", "", re.sub(r"loc\([^)]*\)", "", lowered.as_text()))


def main(_):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint read at INFO.
  stage1 = dict(item.split(":", 1) for item in FLAGS.stage1)
  train = data.load("mnist", "train", limit=1024)
  out = {}
  for name in models.names():
    firsts = models.get(name).stage1_families[:1]
    if firsts and firsts[0] not in stage1:
      print(f"{name}: skipped (no --stage1={firsts[0]}:WORKDIR)", file=sys.stderr)
      continue
    config = configs.get_config(name, **({"stage1_workdir": stage1[firsts[0]]} if firsts else {}))
    text = program_text(config, train)
    out[name] = {"train_loop": config.run.train_loop, "chars": len(text),
                 "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
  print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
