"""The pixel-space flow-matching families `flow` and `cond_flow` (models/pixel_flow.py).

(Training, bitwise resume and the sampler's shapes are covered for every family by
test_families.py; the flow-matching core by test_flow.py.)"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, compile_once, init_variables, tiny_config
from mnistgen_jax import flow, models, runs, trainer
from mnistgen_jax import train as train_lib
from mnistgen_jax.metrics import likelihood



def _model_and_variables(name, **overrides):
  config = tiny_config(name, **overrides)
  model = models.get(name).build(config)
  x, y = jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32)
  variables = init_variables(model, x, y)
  return config, model, variables


def _perturbed(variables, scale=0.05):
  """The parameters moved off their initial values (zero-initialised layers included); drawn by
  numpy, as a compiled draw per parameter shape would cost seconds."""
  noise = np.random.default_rng(7)
  params = jax.tree.map(lambda p: p + scale * noise.standard_normal(p.shape, np.float32),
                        variables["params"])
  return {**variables, "params": params}


@pytest.mark.slow
def test_unet_starts_at_zero_velocity_and_keeps_the_image_shape(mnist_slice):
  _, model, variables = _model_and_variables("cond_flow")
  assert model.channels == (8, 16)  # two resolutions: 28x28, 14x14 (attention there)
  network = compile_once(lambda v, x, t, y: model.apply(v, x, t, y, method=lambda m, *a: m.unet(*a)))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:4]))
  t, y = jnp.linspace(0.1, 0.9, 4), jnp.asarray(mnist_slice[1][:4])
  out = network(variables, x, t, y)
  assert out.shape == x.shape
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised output convolution
  trained = _perturbed(variables)
  out = network(trained, x, t, y)
  assert float(jnp.abs(out).max()) > 0
  # Time and label both reach the output.
  assert float(jnp.abs(network(trained, x, t[::-1], y) - out).max()) > 1e-6
  assert float(jnp.abs(network(trained, x, t, (y + 1) % 10) - out).max()) > 1e-6


def test_loss_is_the_core_objective_on_images_scaled_to_minus_one_one(mnist_slice):
  _, model, variables = _model_and_variables("flow")
  variables = _perturbed(variables)
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:8]))
  y = jnp.asarray(mnist_slice[1][:8])
  key = jax.random.PRNGKey(3)
  losses = compile_once(lambda v: model.apply(v, x, y, method="losses", rngs={"sample": key}))(
      variables)["loss"]
  # The module's first 'sample' draw, split as in `losses`: the core's loss with the same keys.
  flow_key, _ = jax.random.split(_first_rng(model, key))
  network = lambda xt, t: model.apply(variables, xt, t, jnp.zeros_like(y),
                                      method=lambda m, *a: m.unet(*a))
  expected = compile_once(lambda x: flow.matching_loss(network, 2.0 * x - 1.0, flow_key,
                                                  model.time_sampling))(x)
  np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
  assert losses.shape == (8,) and float(losses.min()) > 0


def _first_rng(model, key):
  """The key a module's first make_rng('sample') returns under rngs={'sample': key}."""
  return model.apply({}, method=lambda m: m.make_rng("sample"), rngs={"sample": key})


@pytest.mark.slow
def test_the_trajectory_ends_at_the_sample_and_starts_at_noise():
  _, model, variables = _model_and_variables("cond_flow", sample_steps=8, solver="euler")
  variables = _perturbed(variables)
  y, key = jnp.arange(4, dtype=jnp.int32), jax.random.PRNGKey(5)
  path = compile_once(lambda v: model.apply(v, y, 4, method="trajectory", rngs={"sample": key}))(
      variables)
  sample = compile_once(lambda v: model.apply(v, y, method="sample", rngs={"sample": key}))(variables)
  assert path.shape == (5, 4, 28, 28, 1)
  np.testing.assert_allclose(path[-1], sample, atol=1e-5)
  noise = jax.random.normal(_first_rng(model, key), (4, 28, 28, 1))
  np.testing.assert_allclose(path[0], jnp.clip((noise + 1) / 2, 0, 1), atol=1e-6)
  assert float(jnp.abs(path[2] - path[0]).mean()) > 0  # it moves


@pytest.mark.slow
def test_sampling_uses_the_moving_average_of_the_weights():
  _, model, variables = _model_and_variables("flow", sample_steps=2)
  live = _perturbed(variables)
  y, key = jnp.zeros(2, jnp.int32), jax.random.PRNGKey(0)
  sample = compile_once(lambda v: model.apply(v, y, method="sample", rngs={"sample": key}))
  with_average = {**live, "ema": {"unet": variables["params"]["unet"]}}
  np.testing.assert_allclose(sample(with_average), sample(variables), atol=1e-6)
  assert float(jnp.abs(sample(live) - sample(variables)).max()) > 1e-4


@pytest.mark.slow
def test_training_lowers_the_loss_on_real_digits(mnist_slice):
  config, model, _ = _model_and_variables("flow")
  tx = optax.adam(2e-3)
  state = train_lib.init_state(model, tx, 0, (28, 28, 1))
  step = compile_once(train_lib.make_train_step(model, tx))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:64]))
  y = jnp.asarray(mnist_slice[1][:64])
  evaluate = lambda s: float(model.apply(s.variables(), x, y, method="losses",
                                         rngs={"sample": jax.random.PRNGKey(9)})["loss"].mean())
  before = evaluate(state)
  for _ in range(40):
    state, _ = step(state, x, y)
  assert evaluate(state) < 0.8 * before


@pytest.fixture(scope="module")
def cond_flow_run(tmp_path_factory):
  """A tiny finished cond_flow run (`flow` trains through the same code: test_families.py)."""
  workdir = str(tmp_path_factory.mktemp("pixel_flow") / "cond_flow")
  trainer.train_and_evaluate(tiny_config("cond_flow", num_epochs=1, sample_steps=4), workdir,
                             print_fn=lambda *a: None)
  return workdir


@pytest.mark.slow
def test_a_run_draws_its_trajectory_and_keeps_an_average(cond_flow_run):
  assert os.path.getsize(os.path.join(cond_flow_run, "trajectory.png")) > 1000
  _, _, model, state = runs.restore_run(cond_flow_run)
  average, live = state.model_state["ema"]["unet"], state.params["unet"]
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(average),
                                                     jax.tree.leaves(live)))
  assert model.conditional


@pytest.mark.slow
def test_an_untrained_flow_is_the_identity_map_so_its_density_is_the_noises(mnist_slice):
  _, model, variables = _model_and_variables("cond_flow")  # zero output layer: v = 0
  images, labels = mnist_slice[0][:6], mnist_slice[1][:6]
  key = jax.random.PRNGKey(3)
  mean, stderr = likelihood.dequantized_bits_per_dim(model, variables, images, labels, key,
                                                     steps=2, batch_size=4)
  expected = []  # log p(u) = log N(2u - 1; 0, I) + D log 2, u dequantized with the same keys
  for i, start in enumerate(range(0, 6, 4)):
    noise_key, _ = jax.random.split(jax.random.fold_in(key, i))
    x = images[start:start + 4]
    u = (x.astype(np.float32) + np.asarray(jax.random.uniform(noise_key, x.shape))) / 256.0
    log_p = (jax.scipy.stats.norm.logpdf(2 * u - 1).reshape(len(x), -1).sum(1) + 784 * np.log(2))
    expected.append((784 * np.log(256) - log_p) / (784 * np.log(2)))
  expected = np.concatenate(expected)
  assert mean == pytest.approx(expected.mean(), rel=1e-5)
  assert stderr == pytest.approx(expected.std(ddof=1) / np.sqrt(6), rel=1e-3)
  moved, _ = likelihood.dequantized_bits_per_dim(model, _perturbed(variables), images, labels,
                                                 key, steps=2, batch_size=4)
  assert abs(moved - mean) > 1e-3  # a network that moves the points changes the density


@pytest.mark.slow
def test_flow_likelihood_cli_scores_a_run_and_refuses_bad_input(cond_flow_run):
  command = [sys.executable, "-m", "experiments.flow_likelihood", f"--workdir={cond_flow_run}",
             "--num=20", "--batch_size=10"]
  proc = subprocess.run(command + ["--steps=2"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(cond_flow_run, "eval.json")) as f:
    result = json.load(f)["ode_likelihood"]
  assert result["num_images"] == 20 and result["steps"] == 2 and result["solver"] == "heun"
  assert 0 < result["bits_per_dim"] < 20 and result["standard_error"] > 0
  assert f"{result['bits_per_dim']:.4f} +- " in proc.stdout
  proc = subprocess.run(command + ["--steps=0"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip() == ("error: --steps must be a positive "
                                                          "integer, got 0")


@pytest.mark.slow
def test_a_patched_unet_folds_pixel_blocks_and_keeps_the_image_shape(mnist_slice):
  from mnistgen_jax.models import nets
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:4]))
  folded = nets.space_to_depth(x, 2)
  assert folded.shape == (4, 14, 14, 4)
  np.testing.assert_array_equal(folded[:, 3, 5, :], x[:, 6:8, 10:12, 0].reshape(4, 4))
  np.testing.assert_array_equal(nets.depth_to_space(folded, 2), x)
  with pytest.raises(ValueError, match=r"--channels=8,16,16 with --patch=2: 28x28 images folded "
                                       r"by 2 cannot be halved 2 times; give fewer --channels"):
    tiny_config("flow", patch=2, channels=(8, 16, 16))
  _, model, variables = _model_and_variables("cond_flow", patch=2)
  assert "folded" in variables["params"]["unet"]
  out = model.apply(_perturbed(variables), x, jnp.full(4, 0.5), jnp.asarray(mnist_slice[1][:4]),
                    method=lambda m, *a: m.unet(*a))
  assert out.shape == x.shape and float(jnp.abs(out).max()) > 0
