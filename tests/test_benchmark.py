"""The benchmark's measurements are sane on a small slice (speed targets live in its runs)."""
import jax
import pytest

from conftest import tiny_config
from mnistgen_jax.cli import benchmark
from mnistgen_jax import data, trainer


@pytest.mark.slow
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


@pytest.mark.slow
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

