"""Binarized MNIST and the IWAE objective (Burda et al. 2016): the data, the loss, the schedule."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compile_once, init_state, init_variables, tiny_config
from mnistgen_jax import configs, data, models, runs, train_setup, trainer
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import nets


def test_fixed_binarization_is_seeded_and_unbiased(mnist_slice):
  images = mnist_slice[0]
  a, b, other = data.binarized(images), data.binarized(images), data.binarized(images, seed=1)
  assert a.dtype == np.uint8 and a.shape == images.shape
  assert set(np.unique(a)) <= {0, 255}
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, other)
  assert np.all(a[images == 0] == 0) and np.all(a[images == 255] == 255)  # certain pixels
  # Each pixel is 255 with probability x / 255: the mean of the draw is the grey mean.
  assert abs(a.mean() / 255 - images.mean() / 255) < 0.005


def test_dynamic_binarization_draws_fresh_bits_each_step(mnist_slice):
  """The chunk runner hands the step Bernoulli draws of the batch, new at every step and the
  same for the same step (what makes resume exact)."""
  config = tiny_config("vae")
  model = models.get("vae").build(config)
  tx = train_lib.make_optimizer(config, 10)
  fresh = lambda: init_state(model, tx)  # the runner donates its state

  def record(state, x, y):
    del y
    return state.replace(step=state.step + 1), {"x": x}

  images, labels = jnp.asarray(mnist_slice[0][:64]), jnp.asarray(mnist_slice[1][:64])
  same_batch = jnp.zeros((3, 64), jnp.int32) + jnp.arange(64)  # the same 64 images, 3 steps
  run = train_lib.make_chunk_runner(model, tx, record, binarize_key=jax.random.PRNGKey(7))
  _, seen = run(fresh(), images, labels, same_batch, 0, 3)
  x = np.asarray(seen["x"])
  assert set(np.unique(x)) <= {0.0, 1.0}
  assert not np.array_equal(x[0], x[1]) and not np.array_equal(x[1], x[2])
  grey = np.asarray(images, np.float32) / 255
  assert abs(x.mean() - grey.mean()) < 0.01
  _, again = train_lib.make_chunk_runner(model, tx, record, binarize_key=jax.random.PRNGKey(7))(
      fresh(), images, labels, same_batch, 0, 3)
  np.testing.assert_array_equal(np.asarray(again["x"]), x)
  _, plain = train_lib.make_chunk_runner(model, tx, record)(fresh(), images, labels, same_batch, 0, 1)
  np.testing.assert_allclose(np.asarray(plain["x"])[0], grey)  # off: the grey pixels


@pytest.mark.slow
def test_binarized_run_resumes_exactly_and_tests_on_the_fixed_binarization(tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config = lambda epochs: tiny_config("vae", num_epochs=epochs, binarize="dynamic")
  quiet = lambda s: None
  trainer.train_and_evaluate(config(2), straight, print_fn=quiet)
  trainer.train_and_evaluate(config(1), resumed, print_fn=quiet)
  trainer.train_and_evaluate(config(2), resumed, print_fn=quiet)
  restore = lambda w: runs.restore_run(w)[3].params
  jax.tree.map(np.testing.assert_array_equal, restore(straight), restore(resumed))
  (_, _), (test_x, _) = train_setup.load_data(config(2))
  assert set(np.unique(test_x)) <= {0, 255}
  grey = train_setup.load_data(tiny_config("vae"))[1][0]
  np.testing.assert_array_equal(test_x, data.binarized(grey))
  with open(os.path.join(straight, "eval.json")) as f:
    assert np.isfinite(json.load(f)["test"]["neg_elbo"])


def _vae(mnist_slice, **overrides):
  config = tiny_config("vae", **overrides)
  model = models.get("vae").build(config)
  variables = init_variables(model, jnp.zeros((2, 28, 28, 1)),
                             jnp.zeros((2,), jnp.int32))
  x = jnp.asarray(data.binarized(mnist_slice[0][:32]), jnp.float32) / 255
  return model, variables, x, jnp.asarray(mnist_slice[1][:32])


@pytest.mark.slow
def test_iwae_objective_is_a_tighter_bound_than_the_k_sample_elbo(mnist_slice):
  """Same k draws (same rng): -log mean_k w_k <= mean_k -log w_k per image (Jensen), equal
  for k = 1; the reported neg_elbo is the same number under both objectives."""
  model, variables, x, y = _vae(mnist_slice, objective="iwae", importance_samples=5)
  elbo_model = models.get("vae").build(tiny_config("vae", objective="elbo", importance_samples=5))
  rngs = {"sample": jax.random.PRNGKey(3)}
  iwae = model.apply(variables, x, y, method="losses", rngs=rngs)
  elbo = elbo_model.apply(variables, x, y, method="losses", rngs=rngs)
  np.testing.assert_allclose(iwae["neg_elbo_k"], elbo["loss"], rtol=1e-6)
  assert np.all(np.asarray(iwae["loss"]) <= np.asarray(elbo["loss"]) + 1e-4)
  assert float(jnp.mean(elbo["loss"] - iwae["loss"])) > 0.1
  k1 = models.get("vae").build(tiny_config("vae", objective="iwae", importance_samples=1))
  one = k1.apply(variables, x, y, method="losses", rngs=rngs)
  np.testing.assert_allclose(one["loss"], one["neg_elbo_k"], rtol=1e-6)
  log_w = model.apply(variables, x, y, 5, method="log_importance_weights", rngs=rngs)
  expected = -(jax.scipy.special.logsumexp(log_w, axis=1) - jnp.log(5.0))
  np.testing.assert_allclose(iwae["loss"], expected, rtol=1e-5)


def test_iwae_objective_trains(mnist_slice):
  config = tiny_config("vae", objective="iwae", importance_samples=5, binarize="dynamic")
  model = models.get("vae").build(config)
  tx = train_lib.make_optimizer(config, 100)
  state = init_state(model, tx)
  run = train_lib.make_chunk_runner(model, tx, binarize_key=jax.random.PRNGKey(0))
  images, labels = jnp.asarray(mnist_slice[0]), jnp.asarray(mnist_slice[1])
  batches = jnp.tile(jnp.arange(256).reshape(4, 64), (10, 1))
  state, metrics = run(state, images, labels, batches, 0, 40)
  loss = np.asarray(metrics["loss"])
  assert np.all(np.isfinite(loss)) and loss[-4:].mean() < loss[:4].mean() - 50


def test_iwae_schedule_and_the_papers_network():
  lr = train_lib.iwae_schedule(1e-3, steps_per_epoch=10)
  for epoch, stage in ((0, 0), (0.9, 0), (1, 1), (3.9, 1), (4, 2), (13, 3), (1093, 7), (5000, 7)):
    np.testing.assert_allclose(float(lr(int(epoch * 10))), 1e-3 * 10 ** (-stage / 7), rtol=1e-5)
  config = configs.get_config("vae", preset="iwae_1layer")
  assert (config.data.binarize, config.train.batch_size, config.run.num_epochs,
          config.model.activation) == ("dynamic", 20, 3280, "tanh")
  model = models.get("vae").build(config)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)},
      jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,), jnp.int32), method="losses"))
  kernels = sorted(tuple(p.shape) for p in jax.tree.leaves(shapes["params"]) if p.ndim == 2)
  # 784-200-200-(2x50) encoder, 50-200-200-784 decoder.
  assert kernels == sorted([(784, 200), (200, 200), (200, 100), (50, 200), (200, 200), (200, 784)])


@pytest.mark.parametrize("bad, message", [
    (dict(binarize="static"), "--binarize='static' is unknown"),
    (dict(objective="vimco"), "--objective='vimco' is unknown"),
    (dict(importance_samples=0), "--importance_samples must be a positive integer"),
])
def test_bad_binarization_or_objective_is_one_line(bad, message):
  with pytest.raises(ValueError, match=message):
    configs.validate(configs.get_config("vae", **bad))


def test_gaussian_log_density_matches_scipy():
  from scipy import stats
  rng = np.random.default_rng(0)
  z, mean, logvar = rng.normal(size=(3, 4, 6))
  got = np.asarray(nets.gaussian_log_density(jnp.asarray(z), jnp.asarray(mean), jnp.asarray(logvar)))
  want = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_two_layer_vae_bounds(mnist_slice):
  """hvae: k-sample weights of both layers; the IWAE loss is below the k-sample ELBO and a few
  IWAE steps on binarized digits lower it."""
  config = tiny_config("hvae", objective="iwae", importance_samples=4, hidden=(64,),
                       hidden2=(32,), latent_dims=(16, 8))
  model = models.get("hvae").build(config)
  tx = train_lib.make_optimizer(config, 100)
  state = init_state(model, tx)
  x = jnp.asarray(data.binarized(mnist_slice[0][:64]), jnp.float32) / 255
  y = jnp.asarray(mnist_slice[1][:64])
  rngs = {"sample": jax.random.PRNGKey(1)}
  log_w = compile_once(lambda v: model.apply(v, x, y, 4, method="log_importance_weights",
                                        rngs=rngs))(state.variables())
  assert log_w.shape == (64, 4) and np.all(np.isfinite(np.asarray(log_w)))
  out = compile_once(lambda v: model.apply(v, x, y, method="losses", rngs=rngs))(state.variables())
  assert np.all(np.asarray(out["neg_iwae_k"]) <= np.asarray(out["neg_elbo_k"]) + 1e-4)
  np.testing.assert_allclose(out["loss"], out["neg_iwae_k"])
  step = compile_once(train_lib.make_train_step(model, tx))
  losses = []
  for _ in range(30):
    state, metrics = step(state, x, y)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 50, losses
  images = compile_once(lambda v: model.apply(v, y[:5], method="sample", rngs=rngs))(state.variables())
  assert images.shape == (5, 28, 28, 1) and 0 <= float(images.min()) <= float(images.max()) <= 1


@pytest.mark.slow
def test_schedule_script_evaluates_each_stage_and_the_curves_tool_plots_them(tmp_path):
  """experiments/iwae_schedule.sh on a tiny run (2 steps an epoch, stages 0-1 = 4 epochs): the
  k = 5000 bound after each stage, kept per stage; run again it trains and evaluates nothing;
  experiments.iwae_curves turns the files into the figure and the table."""
  import subprocess
  import sys
  from PIL import Image
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path / "run"
  env = {**os.environ, "IWAE_IMAGES": "8", "BIN": os.path.dirname(sys.executable)}
  command = ["bash", "experiments/iwae_schedule.sh", str(workdir), "1", "--model=vae",
             "--preset=iwae_1layer", "--train_size=40", "--test_size=100", "--hidden=32,32",
             "--latent_dim=4", "--log_every=2"]
  first = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  results = {e: json.loads((workdir / f"nll_epoch{e}.json").read_text()) for e in (1, 4)}
  assert [r["step"] for r in results.values()] == [2, 8]  # 2 steps an epoch
  for r in results.values():
    assert r["evaluation"]["iwae_images"] == 8 and np.isfinite(r["evaluation"]["iwae_nll_k5000"])
  again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
  assert again.returncode == 0 and again.stdout.count("done before") == 2, again.stdout[-2000:]
  assert "training to epoch" not in again.stdout

  out, table = tmp_path / "curves.png", tmp_path / "curves.md"
  curves = subprocess.run(
      [sys.executable, "-m", "experiments.iwae_curves", f"--run=tiny VAE:{workdir}:86.76",
       f"--out={out}", f"--table={table}"], cwd=root, capture_output=True, text=True)
  assert curves.returncode == 0, curves.stderr[-2000:]
  rows = [line for line in table.read_text().splitlines() if line.startswith("| tiny VAE")]
  assert [row.split(" | ")[1] for row in rows] == ["1", "4"]
  assert f"{results[4]['evaluation']['iwae_nll_k5000']:.2f}" in rows[1] and "86.76" in rows[1]
  assert Image.open(out).size[0] > 400
  bad = subprocess.run([sys.executable, "-m", "experiments.iwae_curves", "--run=no workdir"],
                       cwd=root, capture_output=True, text=True)
  assert bad.returncode != 0 and bad.stderr.strip().startswith("error: --run='no workdir'")
  assert "Traceback" not in bad.stderr
