"""The benchmark's measurements are sane on a small slice (speed targets live in its runs)."""
import json

import jax
import pytest

from conftest import tiny_config
from mnistgen_jax.cli import benchmark
from mnistgen_jax import data, models, trainer
from mnistgen_jax import train as train_lib


def test_family_benchmark_counts_the_flops_of_a_train_step():
  train = data.load("mnist", "train", limit=1024)
  r = benchmark.bench_family("vae", train, "", repeats=1, preset="")
  # MLP VAE 784-400-(2x20)-400-784: forward multiply-adds per image; a train step costs about
  # 2-3x the forward pass (the first layer needs no input gradient).
  forward = 2 * (784 * 400 + 400 * 40 + 20 * 400 + 400 * 784)
  per_image = r["flops_per_step"] / r["batch_size"]
  assert 2.0 * forward < per_image < 3.2 * forward, per_image / forward
  assert r["train_img_per_s"] > 0 and r["sample_img_per_s"] > 0 and r["epoch_seconds"] > 0
  assert r["gflops_per_s"] == r["flops_per_step"] * r["train_img_per_s"] / r["batch_size"] / 1e9
  assert r["devices"] == jax.device_count() and r["num_params"] == 652_824


def test_matmul_roofline_is_positive():
  assert benchmark.matmul_roofline(repeats=1, n=256) > 0


def test_benchmark_times_a_few_steps_of_the_chosen_loop():
  train = data.load("mnist", "train", limit=1024)
  r = benchmark.bench_family("vae", train, "", repeats=1, preset="", max_steps=3,
                             train_loop="steps", sample_images=16, ynn_fusions=False)
  assert r["train_loop"] == "steps" and r["train_img_per_s"] > 0
  assert r["ynn_fusions"] is False  # vae's config says True: the override reached the config
  assert r["epoch_seconds"] is None  # Only part of the epoch was timed.
  assert r["sample_images"] == 16 and r["sample_img_per_s"] > 0


@pytest.mark.slow  # Trains a stage 1 first: ~25 s.
def test_benchmark_feeds_a_prior_on_a_frozen_stage1_its_codes(tmp_path):
  # latent_flow's step reads the frozen encoder's codes (Training.train_inputs), as in training;
  # fed the images it failed inside its first step.
  stage1 = str(tmp_path / "conv_vae")
  trainer.train_and_evaluate(tiny_config("conv_vae", num_epochs=1), stage1,
                             print_fn=lambda s: None)
  train = data.load("mnist", "train", limit=1024)
  r = benchmark.bench_family("latent_flow", train, {"conv_vae": stage1}, repeats=1, preset="",
                             max_steps=2)
  assert r["train_img_per_s"] > 0 and r["sample_img_per_s"] > 0 and r["flops_per_step"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_benchmark_times_the_step_training_runs(name, tiny_run, tmp_path):
  """The benchmark's step (its set-up, runner, keys, batches) gives the trainer's losses, bitwise."""
  overrides = {}
  if models.get(name).stage1_families:
    overrides["stage1_workdir"] = tiny_run(models.get(name).stage1_families[0])
  config = tiny_config(name, num_epochs=1, lr_schedule="constant", **overrides)
  trainer.train_and_evaluate(config, str(tmp_path), print_fn=lambda s: None)
  with open(tmp_path / "metrics.jsonl") as f:
    trained = [r for r in map(json.loads, f) if r["split"] == "train"]
  length = train_lib.chunk_length(len(trained), config.log_every)  # The trainer's first chunk.
  train = data.load("mnist", "train", limit=config.train_size)
  setup = trainer.setup(config, len(train[0]))
  state, images, labels, batches = setup.placed_inputs(*train)
  _, metrics = setup.new_runner()(state, images, labels, batches, 0, length)
  for term, values in jax.device_get(metrics).items():
    assert [float(v) for v in values] == [r[term] for r in trained[:length]], term
