"""Flow matching over a spatial latent grid: the `spatial_vae` stage 1 (models/spatial_vae.py), the
U-Net velocity of latent_flow over its 7x7xC codes, the class-conditional prior over any stage 1,
the one-command two-stage training (--stage1=FAMILY) and the prior's self-contained decoding."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compile_once, init_variables, tiny_config
from mnistgen_jax import api, configs, errors, models, runs, trainer, two_stage
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import latent_flow, pixel_flow

# A tiny stage 1 (--stage1_args): 7x7x2 codes.
STAGE1_ARGS = "channels=8,16 latent_channels=2 train_size=256 test_size=200 num_epochs=2 " \
              "batch_size=64 eval_batch_size=100 num_samples=16"


def _quiet(*args):
  del args


def _perturbed(variables, scale=0.05):
  """Parameters moved off their initial values (zero-initialised output layers included)."""
  noise = np.random.default_rng(7)
  return {**variables, "params": jax.tree.map(
      lambda p: p + scale * noise.standard_normal(p.shape, np.float32), variables["params"])}


def _stage1(mnist_slice, **overrides):
  """A randomly initialised tiny spatial_vae as a models.Stage1."""
  config = tiny_config("spatial_vae", channels=(8, 16), latent_channels=2, **overrides)
  model = models.get("spatial_vae").build(config)
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:8]))
  variables = init_variables(model, x, jnp.asarray(mnist_slice[1][:8]))
  return models.Stage1("", config, model, variables), x


def test_spatial_vae_codes_are_a_grid_and_its_loss_weighs_the_kl(mnist_slice):
  stage1, x = _stage1(mnist_slice, kl_weight=0.25)
  model, variables = stage1.model, stage1.variables
  y = jnp.asarray(mnist_slice[1][:8])
  assert model.code_shape == (7, 7, 2) and model.latent_dim == 98
  rngs = {"sample": jax.random.PRNGKey(3)}

  def outputs(v):
    return (model.apply(v, x, y, method="encode"), model.apply(v, x, y, method="reconstruct"),
            model.apply(v, x, y, method="losses", rngs=rngs))

  codes, recon, terms = compile_once(outputs)(variables)
  assert codes.shape == (8, 98) and recon.shape == (8, 28, 28, 1)
  np.testing.assert_allclose(terms["loss"], terms["recon"] + 0.25 * terms["kl"], rtol=1e-6)
  np.testing.assert_allclose(terms["neg_elbo"], terms["recon"] + terms["kl"], rtol=1e-6)
  # The flat code is the grid in row-major order: position (i, j) holds channels [2k, 2k + 2).
  stats = compile_once(lambda v: model.apply(v, x, method=lambda m, x: m.encoder(x)))(variables)
  np.testing.assert_allclose(codes.reshape(8, 7, 7, 2), stats[..., :2], rtol=1e-6)
  grads = compile_once(jax.grad(lambda p: model.apply(
      {**variables, "params": p}, x, y, method="losses", rngs=rngs)["loss"].mean()))(
          variables["params"])
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_the_unet_on_a_7x7_grid_is_the_unet_on_its_zero_padded_8x8_grid_cropped():
  unet = pixel_flow.UNet(channels=(4, 8), attention=True, num_labels=10)
  grid = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 3))
  t, labels = jnp.array([0.2, 0.7]), jnp.array([1, 10])
  variables = _perturbed(compile_once(unet.init)(jax.random.PRNGKey(1), grid, t, labels))
  padded = jnp.pad(grid, ((0, 0), (0, 1), (0, 1), (0, 0)))
  small, big = compile_once(lambda v: (unet.apply(v, grid, t, labels),
                                       unet.apply(v, padded, t, labels)))(variables)
  assert small.shape == grid.shape
  np.testing.assert_allclose(small, big[:, :7, :7], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(small).max()) > 0


def _prior(mnist_slice, conditional=False, **fields):
  stage1, x = _stage1(mnist_slice)
  # One level without attention: the 7x7 grid through the two-level U-Net with attention is the
  # padding test's.
  # 16 channels: GroupNorm keeps two a group (with one, it would remove the label and time
  # offsets the blocks add).
  fields = {"prior_network": "unet", "prior_channels": (16,), "prior_attention": False,
            "guide_width": 4, **fields}
  config = tiny_config("latent_flow", stage1_workdir="unused", conditional=conditional, **fields)
  model = models.get("latent_flow").build(config, stage1)
  return config, model, stage1, x


def test_grid_codes_get_the_pixel_flows_unet_and_train_it_alone(mnist_slice):
  _, model, stage1, x = _prior(mnist_slice, sample_steps=2)
  y = jnp.asarray(mnist_slice[1][:8])
  assert model.code_shape == (7, 7, 2) and model.code_whitening == "global"
  variables = compile_once(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x, y,
      method="losses"))()
  # The velocity and its guide are U-Nets: the same parameter tree as pixel_flow.UNet's.
  grid = jnp.zeros((1, 7, 7, 2))
  for name, unet in (("velocity", pixel_flow.UNet((16,), False)),
                     ("guide", pixel_flow.UNet((4,), False))):
    shapes = jax.eval_shape(lambda: unet.init(jax.random.PRNGKey(0), grid, jnp.zeros(1),
                                              jnp.zeros(1, jnp.int32)))["params"]
    assert (jax.tree.map(jnp.shape, variables["params"][name]["UNet_0"])
            == jax.tree.map(lambda s: s.shape, shapes))
  trained = _perturbed(variables)

  def codes_gradients_and_samples(v):
    codes = model.apply(v, x, y, method="encode")
    grads = jax.grad(lambda p: model.apply(
        {**v, "params": p}, codes, y, True, method="code_losses",
        rngs={"sample": jax.random.PRNGKey(2)})["loss"].mean())(v["params"])
    return codes, grads, model.apply(v, y[:4], method="sample",
                                     rngs={"sample": jax.random.PRNGKey(3)})

  codes, grads, sample = compile_once(codes_gradients_and_samples)(trained)
  assert codes.shape == (8, 98)
  assert all(float(jnp.abs(g).max()) > 0 for name in ("velocity", "guide")
             for g in jax.tree.leaves(grads[name]))
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["stage1"]))
  assert sample.shape == (4, 28, 28, 1) and 0 <= float(sample.min()) <= float(sample.max()) <= 1


CHANNEL_STD = np.array([0.5, 3.0, 1.0])


def _fitted_grid_codes(whitening):
  """(codes, per-channel values, fitted mean, fitted scale) of 512 random 7x7x3 grids whose three
  channels have their own means and CHANNEL_STD; the mean is checked: per channel."""
  grid = jax.random.normal(jax.random.PRNGKey(0), (512, 7, 7, 3)) * CHANNEL_STD + jnp.array(
      [1.0, -2.0, 0.5])
  codes = grid.reshape(512, -1)
  mean = np.asarray(latent_flow.code_mean(codes, whitening, (7, 7, 3)))
  scale = np.asarray(latent_flow.code_scale(codes, whitening, (7, 7, 3)))
  flat = np.asarray(grid).reshape(-1, 3)
  np.testing.assert_allclose(mean.reshape(49, 3), np.broadcast_to(flat.mean(0), (49, 3)),
                             rtol=1e-5, atol=1e-6)
  return codes, flat, mean, scale


def test_grid_codes_are_standardised_per_channel():
  codes, flat, mean, scale = _fitted_grid_codes("channel")
  np.testing.assert_allclose(np.diag(scale).reshape(49, 3),
                             np.broadcast_to(flat.std(0), (49, 3)), rtol=1e-4)
  assert np.count_nonzero(scale - np.diag(np.diag(scale))) == 0
  white = (np.asarray(codes) - mean) / np.diag(scale)
  np.testing.assert_allclose(white.reshape(-1, 3).std(0), 1.0, rtol=1e-4)


def test_global_whitening_is_one_scale_that_keeps_the_channels_relative_sizes():
  codes, flat, mean, scale = _fitted_grid_codes("global")
  spread = np.sqrt(((flat - flat.mean(0)) ** 2).mean())  # ~ sqrt((0.25 + 9 + 1) / 3)
  np.testing.assert_allclose(scale, spread * np.eye(147), rtol=1e-4)
  white = (np.asarray(codes) - mean) / np.diag(scale)
  np.testing.assert_allclose(white.reshape(-1, 3).std(0), CHANNEL_STD / spread,
                             rtol=0.02)
  np.testing.assert_allclose((white ** 2).mean(), 1.0, rtol=1e-4)
  # Flat codes (no grid): the mean is per dimension, the scale still one number.
  flat_codes = jax.random.normal(jax.random.PRNGKey(1), (256, 5)) * 2.0 + jnp.arange(5.0)
  np.testing.assert_allclose(latent_flow.code_mean(flat_codes, "global"), flat_codes.mean(0),
                             rtol=1e-5)
  assert np.count_nonzero(np.asarray(latent_flow.code_scale(flat_codes, "global"))
                          - np.diag(np.diag(latent_flow.code_scale(flat_codes, "global")))) == 0


def test_prior_network_mlp_puts_the_flat_velocity_over_grid_codes(mnist_slice):
  _, model, stage1, x = _prior(mnist_slice, prior_network="mlp", prior_width=32, prior_layers=2,
                               guide_width=8, sample_steps=2, code_whitening="global")
  y = jnp.asarray(mnist_slice[1][:8])
  assert model.code_shape == (7, 7, 2) and not model.grid_velocity
  variables = compile_once(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x, y,
      method="losses"))()
  mlp = latent_flow.VelocityMLP(98, 32, 2)
  shapes = jax.eval_shape(lambda: mlp.init(jax.random.PRNGKey(0), jnp.zeros((1, 98)),
                                           jnp.zeros(1), jnp.zeros(1, jnp.int32)))["params"]
  assert (jax.tree.map(jnp.shape, variables["params"]["velocity"])
          == jax.tree.map(lambda s: s.shape, shapes))
  sample = compile_once(lambda v: model.apply(v, y[:4], method="sample",
                                              rngs={"sample": jax.random.PRNGKey(3)}))(
      _perturbed(variables))
  assert sample.shape == (4, 28, 28, 1)
  # The U-Net needs a grid: over flat codes it is refused in one line.
  flat_stage1 = models.get("ae").build(tiny_config("ae"))
  with pytest.raises(errors.UserError, match="--prior_network=unet needs grid codes"):
    models.get("latent_flow").build(
        tiny_config("latent_flow", stage1_workdir="unused", prior_network="unet"),
        models.Stage1("", tiny_config("ae"), flat_stage1, None))


def test_a_conditional_prior_over_an_unconditional_stage1_follows_the_label(mnist_slice):
  _, model, stage1, x = _prior(mnist_slice, conditional=True, guide_width=0, autoguidance=1.0,
                               ema_decay=0.0)  # sampling reads the perturbed weights
  assert model.conditional and not stage1.model.conditional
  y = jnp.asarray(mnist_slice[1][:8])
  variables = _perturbed(compile_once(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x, y,
      method="losses"))())
  embedding = variables["params"]["velocity"]["UNet_0"]["Embed_0"]["embedding"]
  assert embedding.shape[0] == 11  # the ten digits and "no label"
  threes, sevens = jnp.full(4, 3, jnp.int32), jnp.full(4, 7, jnp.int32)
  key = jax.random.PRNGKey(4)

  def codes(v):  # guidance 1, then 0, for threes and sevens
    return [[model.clone(guidance=g).apply(v, labels, method="sample_codes", rngs={"sample": key})
             for labels in (threes, sevens)] for g in (1.0, 0.0)]

  (three, seven), (free_three, free_seven) = compile_once(codes)(variables)
  assert float(jnp.abs(three - seven).max()) > 1e-4
  # Guidance 0: the "no label" velocity alone, whatever digit is asked for.
  np.testing.assert_allclose(free_three, free_seven, atol=1e-6)


def test_stage1_args_set_the_stage1_fields_and_bad_ones_are_one_line():
  config = configs.get_config("latent_flow", stage1="spatial_vae", stage1_args=STAGE1_ARGS,
                              dataset="mnist", seed=3)
  stage1 = configs.stage1_config(config)
  assert stage1.family == "spatial_vae" and stage1.model.channels == (8, 16)
  assert stage1.model.latent_channels == 2 and stage1.run.num_epochs == 2
  assert stage1.train.seed == 3
  for args, message in (("latent_chanels=2", "not FIELD=VALUE of a spatial_vae field"),
                        ("kl_weight=lots", "kl_weight='lots' is not a float"),
                        ("kl_weight=2", "--kl_weight must be in (0, 1]")):
    bad = configs.get_config("latent_flow", stage1="spatial_vae", stage1_args=args)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
      configs.stage1_config(bad)
  with pytest.raises(ValueError, match="pass one"):
    configs.get_config("latent_flow", stage1="spatial_vae", stage1_workdir="elsewhere")
  with pytest.raises(ValueError, match="pass --stage1 too"):
    configs.get_config("latent_flow", stage1_args="num_epochs=1")


def _two_stage_config(**overrides):
  return tiny_config("latent_flow", stage1="spatial_vae", stage1_args=STAGE1_ARGS,
                     prior_channels=(8, 16), guide_width=4, lr_schedule="constant",
                     sample_steps=2, **overrides)


def _train_both(config, workdir):
  two_stage.train_stage1(config, workdir, evaluate=False, print_fn=_quiet)
  trainer.train_and_evaluate(config, workdir, print_fn=_quiet)


def _params(workdir):
  return runs.restore_run(workdir)[3].params


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                  strict=True))


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
  """A tiny one-command run: spatial_vae into W/stage1, then the grid prior in W."""
  workdir = str(tmp_path_factory.mktemp("grid_flow") / "run")
  _train_both(_two_stage_config(), workdir)
  return workdir


@pytest.mark.slow
def test_one_command_trains_stage1_inside_then_the_prior_and_each_stage_resumes(two_stage_run,
                                                                                tmp_path):
  stage1_dir = os.path.join(two_stage_run, runs.STAGE1_FOLDER)
  assert runs.is_finished_run(stage1_dir) and runs.is_finished_run(two_stage_run)
  assert os.path.exists(os.path.join(two_stage_run, runs.STAGE1_CONFIG))
  stage1_config = runs.load_config(stage1_dir)
  assert stage1_config.family == "spatial_vae" and stage1_config.model.latent_channels == 2
  # Stage 1 stopped after one of its two epochs, then the command again: it resumes stage 1,
  # then trains the prior, stopped after its first epoch and resumed: the straight run's bits.
  resumed = str(tmp_path / "resumed")
  config = _two_stage_config()
  trainer.train_and_evaluate(
      configs.get_config("spatial_vae", **{**configs.fields(configs.stage1_config(config)),
                                           "num_epochs": 1}),
      os.path.join(resumed, runs.STAGE1_FOLDER), print_fn=_quiet)
  two_stage.train_stage1(config, resumed, evaluate=False, print_fn=_quiet)
  assert _equal(_params(os.path.join(resumed, runs.STAGE1_FOLDER)), _params(stage1_dir))
  trainer.train_and_evaluate(_two_stage_config(num_epochs=1), resumed, print_fn=_quiet)
  _train_both(config, resumed)  # stage 1 is skipped: the prior's workdir holds its own
  assert _equal(_params(resumed), _params(two_stage_run))


@pytest.mark.slow
def test_the_prior_decodes_with_what_its_workdir_stores(two_stage_run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(two_stage_run, workdir)
  before, _ = api.load_run(workdir).sample(8, seed=1)
  # Stage 1 retrained with another network of the same code shape, then deleted: the prior's
  # samples stay the same, bit for bit.
  stage1_dir = os.path.join(workdir, runs.STAGE1_FOLDER)
  shutil.rmtree(stage1_dir)
  other = configs.stage1_config(_two_stage_config())
  other.model.activation = "tanh"
  trainer.train_and_evaluate(other, stage1_dir, print_fn=_quiet)
  np.testing.assert_array_equal(api.load_run(workdir).sample(8, seed=1)[0], before)
  shutil.rmtree(stage1_dir)
  np.testing.assert_array_equal(api.load_run(workdir).sample(8, seed=1)[0], before)
  # The one command again: nothing to train, stage 1 is not needed.
  _train_both(_two_stage_config(), workdir)
  assert not os.path.exists(stage1_dir)


@pytest.mark.parametrize("preset", ["grid", "grid_accelerator"])
def test_the_grid_presets_train_a_spatial_stage1_then_an_mlp_prior(preset):
  config = configs.get_config("latent_flow", preset=preset)
  assert config.model.stage1 == "spatial_vae" and config.model.prior_network == "mlp"
  stage1 = configs.stage1_config(config)  # --stage1_args parsed and validated
  assert stage1.family == "spatial_vae" and stage1.model.latent_channels == 2
  assert stage1.run.num_epochs == (5 if preset == "grid" else 20)
  grid = models.get("spatial_vae").build(stage1).code_shape
  assert grid == (7, 7, 2) and latent_flow.code_whitening(config, grid) == "global"
