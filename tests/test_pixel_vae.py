"""pixel_vae: the PixelCNN decoder's causality, its likelihood terms, its pixel-by-pixel drawing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compile_once, init_state, init_variables, tiny_config
from mnistgen_jax import configs, data, models
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import nets, pixel_vae


def test_causal_masks_by_hand():
  a = np.asarray(nets.causal_mask(3, "A"))
  b = np.asarray(nets.causal_mask(3, "B"))
  np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
  five = np.asarray(nets.causal_mask(5, "A"))
  assert five.sum() == 12 and five[2, :2].all() and not five[2, 2:].any() and not five[3:].any()
  with pytest.raises(ValueError, match="mask_type"):
    nets.causal_mask(3, "C")


@pytest.mark.parametrize("kernel, layers", [(3, 1), (5, 2)])
def test_pixelcnn_logits_see_only_earlier_pixels(kernel, layers):
  """d logit_i / d x_j is zero for every pixel j at or after i in raster order (so the
  teacher-forced pass is a proper autoregressive likelihood), and not zero for all j < i."""
  net = pixel_vae.PixelCNN(channels=8, layers=layers, first_kernel=kernel)
  size, n = 8, 64
  images = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (8, 1, size, size, 1))
  features = jax.random.normal(jax.random.PRNGKey(1), (8, 1, size, size, 4))
  params = compile_once(net.init)(jax.random.PRNGKey(2), images[0].astype(jnp.float32),
                                         features[0])

  def jacobian(x, f):  # (pixel i, input pixel j) of one image
    logits = lambda flat: net.apply(params, flat.reshape(x.shape), f).reshape(-1)
    return jax.jacfwd(logits)(x.reshape(-1).astype(jnp.float32))

  # Summed over 8 random images: a path that one image's ReLUs cut is open for another's.
  total = np.abs(np.asarray(compile_once(jax.vmap(jacobian))(images, features))).sum(0)
  future = np.triu(np.ones((n, n), bool))  # j >= i
  assert total[future].max() == 0.0
  assert (total[~future] > 0).mean() > 0.2, "the logits should depend on earlier pixels"
  for i in range(size, n):  # Every pixel sees the one above it and its left neighbour.
    assert total[i, i - size] > 0 and (i % size == 0 or total[i, i - 1] > 0)


def _model(mnist_slice, **overrides):
  config = tiny_config("pixel_vae", **overrides)
  model = models.get("pixel_vae").build(config)
  x = jnp.asarray(data.binarized(mnist_slice[0][:32]), jnp.float32) / 255
  y = jnp.asarray(mnist_slice[1][:32])
  variables = init_variables(model, x, y, method="losses")
  return config, model, variables, x, y


def test_importance_weights_are_the_pixelcnn_likelihood_plus_prior_minus_posterior(mnist_slice):
  _, model, variables, x, y = _model(mnist_slice)
  eps = jax.random.normal(jax.random.PRNGKey(5), (3, 32, 4))

  @jax.jit
  def by_hand(variables, eps):  # (B, K) log p(x | z_k) + log p(z_k) - log q(z_k | x)
    bound = model.bind(variables)
    mean, logvar = bound.posterior(x, y)
    z = mean + jnp.exp(0.5 * logvar) * eps
    log_px = jnp.stack([-nets.bernoulli_nll(bound.pixelcnn(x, bound.decoder(zk)), x) for zk in z])
    return (log_px + nets.gaussian_log_density(z, 0.0, 0.0)
            - nets.gaussian_log_density(z, mean, logvar)).T

  weights = compile_once(lambda v, eps, per_pass: model.apply(
      v, x, y, 3, per_pass, eps=eps, method="log_importance_weights"), static_argnums=2)
  log_w = weights(variables, eps, 0)
  assert log_w.shape == (32, 3)
  np.testing.assert_allclose(np.asarray(log_w), np.asarray(by_hand(variables, eps)), rtol=2e-5,
                             atol=2e-3)
  # The passes of the evaluation (one sample at a time): the same values.
  np.testing.assert_allclose(np.asarray(weights(variables, eps, 1)), np.asarray(log_w),
                             rtol=1e-5, atol=1e-4)
  # The one-sample ELBO loss is recon + KL with recon the PixelCNN's -log p(x | z).
  out = compile_once(lambda v: model.apply(v, x, y, method="losses",
                                      rngs={"sample": jax.random.PRNGKey(3)}))(variables)
  np.testing.assert_allclose(out["loss"], out["recon"] + out["kl"], rtol=1e-6)
  assert np.all(np.asarray(out["kl"]) >= 0)


def test_greedy_decode_is_a_fixed_point_of_the_teacher_forced_pass(mnist_slice):
  """decode draws pixel by pixel; fed back through the one-pass network, every pixel of the
  result is the more likely value given the pixels before it: the loop and the masks agree."""
  _, model, variables, x, y = _model(mnist_slice)
  z = jax.random.normal(jax.random.PRNGKey(4), (6, 4))
  images = model.apply(variables, z, y[:6], method="decode")
  assert images.shape == (6, 28, 28, 1) and set(np.unique(np.asarray(images))) <= {0.0, 1.0}
  bound = model.bind(variables)
  logits = bound.pixelcnn(images, bound.decoder(z))
  np.testing.assert_array_equal(np.asarray(logits > 0), np.asarray(images) > 0.5)


@pytest.mark.slow
def test_samples_follow_the_models_probabilities():
  """Drawn pixel by pixel with a key (8x8 images: 64 passes): binary, the same for the same key,
  other for another, and each pixel's frequency over many draws at a fixed z matches the
  model's probability given the drawn past (checked on the first pixel, whose past is empty)."""
  model = pixel_vae.PixelVAE(arch="conv", latent_dim=4, hidden=(16,), channels=(8, 16),
                             image_shape=(8, 8, 1), num_classes=0, pixel_channels=8,
                             pixel_layers=1, pixel_kernel=3)
  z = jnp.zeros((1000, 4))
  variables = init_variables(model, jnp.zeros((2, 8, 8, 1)),
                             jnp.zeros((2,), jnp.int32))
  draw = compile_once(lambda v, z, k: model.apply(v, z, k, method="draw_pixels"))
  one, again = draw(variables, z, jax.random.PRNGKey(0)), draw(variables, z, jax.random.PRNGKey(0))
  other = draw(variables, z, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(one), np.asarray(again))
  assert not np.array_equal(np.asarray(one), np.asarray(other))
  assert set(np.unique(np.asarray(one))) <= {0.0, 1.0}
  bound = model.bind(variables)
  p_first = float(jax.nn.sigmoid(bound.pixelcnn(jnp.zeros((1, 8, 8, 1)),
                                                bound.decoder(z[:1]))[0, 0, 0, 0]))
  freq = float(np.asarray(one)[:, 0, 0, 0].mean())
  assert abs(freq - p_first) < 4 * np.sqrt(p_first * (1 - p_first) / 1000) + 1e-3


def test_kl_warmup_objective():
  objective = pixel_vae.kl_warmup(10)
  terms = {"recon": jnp.float32(2.0), "kl": jnp.float32(4.0), "loss": jnp.float32(6.0)}
  for step, want in ((0, 2.4), (4, 4.0), (9, 6.0), (500, 6.0)):
    np.testing.assert_allclose(float(objective(terms, jnp.int32(step))), want, rtol=1e-6)


@pytest.mark.slow
def test_pixel_vae_trains_on_binarized_digits(mnist_slice):
  """With the KL warm-up (the default), the reported loss is still the whole negative ELBO."""
  config = tiny_config("pixel_vae", binarize="dynamic", kl_warmup_steps=20)
  model = models.get("pixel_vae").build(config)
  tx = train_lib.make_optimizer(config, 100)
  state = init_state(model, tx)
  step = models.get("pixel_vae").training.step(model, tx, config)
  run = train_lib.make_chunk_runner(model, tx, step, binarize_key=jax.random.PRNGKey(0))
  images, labels = jnp.asarray(mnist_slice[0]), jnp.asarray(mnist_slice[1])
  batches = jnp.tile(jnp.arange(256).reshape(4, 64), (8, 1))
  state, metrics = run(state, images, labels, batches, 0, 32)
  loss = np.asarray(metrics["loss"])
  assert np.all(np.isfinite(loss)) and loss[-4:].mean() < loss[:4].mean() - 100
  np.testing.assert_allclose(loss, np.asarray(metrics["recon"]) + np.asarray(metrics["kl"]),
                             rtol=1e-5)


def test_config_checks_and_the_accelerator_preset():
  with pytest.raises(ValueError, match="--pixel_kernel must be an odd integer"):
    configs.get_config("pixel_vae", pixel_kernel=4)
  with pytest.raises(ValueError, match="--kl_warmup_steps weighs the one-sample ELBO"):
    configs.get_config("pixel_vae", objective="iwae", importance_samples=5)
  with pytest.raises(ValueError, match="--pixel_layers must be a positive integer"):
    configs.get_config("pixel_vae", pixel_layers=0)
  config = configs.get_config("pixel_vae", preset="accelerator")
  assert (config.data.binarize, config.model.pixel_channels,
          config.model.pixel_layers) == ("dynamic", 64, 6)


@pytest.mark.slow
def test_accelerator_script_trains_within_its_budget_and_evaluates(tmp_path):
  """experiments/accelerator_pixel_vae.sh with a tiny network on the CPU (the benchmark step
  skipped): the probe's img/s sets the epochs, the run is evaluated with the IWAE bound, and the
  run without its checkpoints is packed."""
  import json
  import os
  import subprocess
  import sys
  import tarfile
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "out"
  env = {**os.environ, "PYTHON": sys.executable, "RUNS_DIR": str(tmp_path / "runs"),
         "BENCH_SECONDS": "0", "EVAL_SECONDS": "5", "TRAIN_OVERHEAD": "5", "MAX_EPOCHS": "2",
         "IWAE_K": "5",
         "TRAIN_ARGS": "--pixel_channels=8 --pixel_layers=1 --pixel_kernel=3 --channels=8,16 "
                       "--hidden=32 --latent_dim=4 --train_size=256 --test_size=100 "
                       "--batch_size=64 --kl_warmup_steps=4 --log_every=2",
         "EVAL_ARGS": "--num_samples=16 --reconstruction_images=16 --iwae_images=20"}
  done = subprocess.run(["bash", "experiments/accelerator_pixel_vae.sh", str(out), "100000"],
                        cwd=root, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  assert "epochs" in done.stdout and "done (" in done.stdout
  run = tmp_path / "runs" / "pixel_vae"
  evaluation = json.loads((run / "eval.json").read_text())
  assert evaluation["epochs"] == 2.0  # MAX_EPOCHS caps a generous budget
  assert np.isfinite(evaluation["evaluation"]["iwae_nll_k5"])
  assert evaluation["evaluation"]["reconstructions"]["images"] == 16
  with tarfile.open(out / "run.tgz") as packed:
    names = packed.getnames()
  assert "pixel_vae/eval.json" in names and "pixel_vae/samples.png" in names
  assert not any("checkpoints" in n for n in names)
