"""Every registered family gets these tests by registering: no list to edit.

Smoke (a tiny real-MNIST run through the shared loop, finite losses, outputs written), resume
equality (1 epoch then 2 == 2 straight, bitwise), the sampler (shapes, range, determinism), the
golden losses and the benchmark's step, all on one straight run per family. Multi-stage families
first get a tiny trained run of their first stage-1 family.

Golden losses: tests/golden/<family>.json holds the train loss terms of the run's first 4 steps and
its first test evaluation, as float32 bits; a change to the loop, the set-up, the runs or the
configs must leave them as they are. XLA:CPU's kernels differ between instruction sets (AVX2,
AVX-512), so the bits are compared on the kind of CPU the record was made on, and elsewhere the
optimised loss of each record to float closeness (rtol 1e-3). Rewrite the records only for a change meant to change the numbers:
  MNISTGEN_UPDATE_GOLDEN=1 python -m pytest tests/test_families.py -k golden
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quiet, tiny_config
from mnistgen_jax import checkpoint, cpu_compiler, data, models, report, runs, train_setup, trainer
from mnistgen_jax import train as train_lib

# End-to-end: every test here trains or restores whole runs (pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow

# One xdist group per family (conftest): its tests share its straight run, in one worker.
FAMILIES = [pytest.param(name, marks=pytest.mark.xdist_group(f"family_{name}"))
            for name in models.names()]


_quiet = quiet
GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
UPDATE_GOLDEN = os.environ.get("MNISTGEN_UPDATE_GOLDEN") == "1"


def _config(name, stage1_runs, **overrides):
  # A cosine schedule decays over the configured total, so 1 epoch then 2 is not 2 straight (such
  # a resume is refused); here every family resumes under a constant rate.
  overrides.setdefault("lr_schedule", "constant")
  stage1_families = models.get(name).stage1_families
  if stage1_families:
    overrides["stage1_workdir"] = stage1_runs(stage1_families[0])
  return tiny_config(name, **overrides)


def _assert_trees_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight_run(tiny_run, tmp_path_factory):
  """straight_run(name) -> (config, workdir, result) of a family's tiny 2-epoch run, trained once
  for every test of this file."""
  done = {}

  def get(name):
    if name not in done:
      config = _config(name, tiny_run, num_epochs=2)
      workdir = str(tmp_path_factory.mktemp(f"straight_{name}"))
      done[name] = config, workdir, trainer.train_and_evaluate(config, workdir, print_fn=_quiet)
    return done[name]
  return get


def _records(workdir: str) -> list:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_resumes_exactly_and_samples(name, tiny_run, straight_run, tmp_path):
  stage1_runs = tiny_run
  _, straight, result = straight_run(name)
  resumed = str(tmp_path / "resumed")
  trainer.train_and_evaluate(_config(name, stage1_runs, num_epochs=1), resumed, print_fn=_quiet)
  lines = []
  trainer.train_and_evaluate(_config(name, stage1_runs, num_epochs=2), resumed,
                             print_fn=lines.append)

  # Smoke: finite losses every step, a test evaluation per epoch, the outputs on disk.
  records = _records(straight)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, 9))
  assert all(np.isfinite(r["loss"]) for r in train)
  assert [r["step"] for r in records if r["split"] == "test"] == [4, 8]
  family = models.get(name)
  assert np.isfinite(result["test"][family.loss_name])
  assert os.path.exists(os.path.join(straight, "curves.png"))
  assert os.listdir(os.path.join(straight, "tensorboard"))

  # Resume: bit-identical state, one metrics line per step.
  assert lines[0].startswith("resumed from") and "at step 4" in lines[0]
  a, b = runs.restore_run(straight)[3], runs.restore_run(resumed)[3]
  _assert_trees_equal(a.params, b.params)
  _assert_trees_equal(a.opt_state, b.opt_state)
  _assert_trees_equal(a.model_state, b.model_state)
  records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").open()]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))
  # restore_run's target is abstract (jax.eval_shape): the same arrays, dtypes and placement as
  # restoring into a freshly initialised state.
  config, family, model, _ = runs.restore_run(straight)
  _, fresh = train_setup.initial_state(family, model, config, 0, runs.load_stage1(config, family))
  ckpt = checkpoint.Checkpointer(straight, config.run.keep_checkpoints)
  into_fresh = ckpt.restore(fresh)
  ckpt.close()
  _assert_trees_equal(a, into_fresh)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(into_fresh)):
    assert x.dtype == y.dtype and x.sharding == y.sharding

  # Sampler: from the restored checkpoint alone (its sampling prior, if any, is inside).
  config, _, model, state = runs.restore_run(straight)
  if not models.supports(model, "sample"):
    assert not os.path.exists(os.path.join(straight, "samples.png"))
    return
  assert os.path.exists(os.path.join(straight, "samples.png"))
  info = data.info(config.data.dataset)
  sampler = report.make_sampler(model)
  labels = jnp.arange(6, dtype=jnp.int32) % info.num_classes
  one = np.asarray(sampler(state.variables(), labels, jax.random.PRNGKey(0)))
  again = np.asarray(sampler(state.variables(), labels, jax.random.PRNGKey(0)))
  other = np.asarray(sampler(state.variables(), labels, jax.random.PRNGKey(1)))
  assert one.shape == (6, *info.image_shape) and one.dtype == np.float32
  assert 0 <= one.min() <= one.max() <= 1 and np.isfinite(one).all()
  np.testing.assert_array_equal(one, again)
  assert np.abs(one - other).max() > 1e-6


def cpu_kind() -> str:
  """The instruction-set family XLA:CPU compiles for: 'avx512', 'avx2' or the machine name."""
  return cpu_compiler.cpu_info()[1]


def _as_float32_bits(records) -> list:
  skip = {"step", "epoch", "split", "train_seconds"}
  return [{k: np.float32(v).tobytes().hex() for k, v in sorted(r.items())
           if k not in skip and isinstance(v, float)} for r in records]


@pytest.mark.parametrize("name", FAMILIES)
def test_losses_match_the_golden_record(name, straight_run):
  records = _records(straight_run(name)[1])
  first_epoch = [r for r in records if r["step"] <= 4]  # 4 train steps, then the test losses.
  got = _as_float32_bits(first_epoch)
  assert len(got) == 5 and all(got) and first_epoch[-1]["split"] == "test"
  path = os.path.join(GOLDEN, f"{name}.json")
  if UPDATE_GOLDEN:
    with open(path, "w") as f:
      json.dump({"cpu": cpu_kind(), "records": got}, f, indent=1, sort_keys=True)
      f.write("\n")
    return
  assert os.path.exists(path), f"{name} has no golden record: run with MNISTGEN_UPDATE_GOLDEN=1"
  with open(path) as f:
    record = json.load(f)
  want = record["records"]
  # Terms logged since the record was made (e.g. grad_norm) may be added; none may go.
  assert all(set(w) <= set(g) for g, w in zip(got, want)), (got, want)
  got = [{k: g[k] for k in w} for g, w in zip(got, want)]
  if record["cpu"] == cpu_kind():
    assert got == want
  else:
    # Another instruction set rounds otherwise, and Adam's first steps (m / sqrt(v)) can turn a
    # rounding difference of a tiny gradient into a full step, and a near tie into another
    # discrete count (codes used, a digit read): the optimised loss, to float closeness.
    loss = lambda rows: np.array([np.frombuffer(bytes.fromhex(r["loss"]), np.float32)[0]
                                  for r in rows])
    np.testing.assert_allclose(loss(got), loss(want), rtol=1e-3)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_benchmark_times_the_step_training_runs(name, straight_run):
  """The benchmark's step (trainer.setup: runner, keys, batches) gives the trainer's losses."""
  config, workdir, _ = straight_run(name)
  trained = [r for r in _records(workdir) if r["split"] == "train"]
  length = train_lib.chunk_length(len(trained) // config.run.num_epochs, config.run.log_every)
  train = data.load("mnist", "train", limit=config.data.train_size)
  setup = trainer.setup(config, len(train[0]))
  state, images, labels, batches = setup.placed_inputs(*train)
  _, metrics = setup.new_runner()(state, images, labels, batches, 0, length)
  for term, values in jax.device_get(metrics).items():
    assert [float(v) for v in values] == [r[term] for r in trained[:length]], term
