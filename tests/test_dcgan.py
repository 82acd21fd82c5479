import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import compile_once, initial_state, tiny_config
from mnistgen_jax import models, runs, trainer
from mnistgen_jax.models import dcgan
from mnistgen_jax import train as train_lib


def _setup(name="dcgan", **overrides):
  config = tiny_config(name, **overrides)
  family = models.get(name)
  model = family.build(config)
  tx, state = initial_state(family, model, config, 10)
  return config, family, model, tx, state


@pytest.mark.parametrize("name,hidden", [("dcgan", 0), ("cond_dcgan", 24),
                                         pytest.param("dcgan", 24, marks=pytest.mark.slow)])
def test_shapes_and_finite_losses(name, hidden, mnist_slice):
  config, family, model, tx, state = _setup(name, gan_hidden=hidden)
  if hidden:  # The dense hidden layers exist in both networks, with the width asked for.
    assert state.params["generator"]["Dense_0"]["kernel"].shape[-1] == hidden
    assert state.params["discriminator"]["Dense_0"]["kernel"].shape[-1] == hidden
  y = jnp.arange(6, dtype=jnp.int32)
  images = compile_once(lambda v: model.apply(v, y, method="sample",
                                         rngs={"sample": jax.random.PRNGKey(0)}))(state.variables())
  assert images.shape == (6, 28, 28, 1) and 0 <= float(images.min()) <= float(images.max()) <= 1
  step = compile_once(family.training.step(model, tx, config))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:32]))
  state, metrics = step(state, x, jnp.asarray(mnist_slice[1][:32]))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert 0 < float(metrics["d_real"]) < 1 and int(state.step) == 1


def test_each_loss_has_gradients_where_expected(mnist_slice):
  _, _, model, _, state = _setup()
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:32]))
  y = jnp.asarray(mnist_slice[1][:32])
  params = state.params
  z = jax.random.normal(jax.random.PRNGKey(0), (32, model.latent_dim))

  def d_loss(p):
    fake = jax.lax.stop_gradient(model.apply({"params": p, **state.model_state}, z, y, True,
                                             method="generate", mutable=["batch_stats"])[0])
    real = model.apply({"params": p, **state.model_state}, x, y, method="discriminate")
    fake_logits = model.apply({"params": p, **state.model_state}, fake, y, method="discriminate")
    return (jax.nn.softplus(-real) + jax.nn.softplus(fake_logits)).mean()

  def g_loss(p):
    fake = model.apply({"params": p, **state.model_state}, z, y, True, method="generate",
                       mutable=["batch_stats"])[0]
    return jax.nn.softplus(-model.apply({"params": p, **state.model_state}, fake, y,
                                        method="discriminate")).mean()

  gd, gg = compile_once(jax.grad(d_loss))(params), compile_once(jax.grad(g_loss))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(gd["generator"]))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gd["discriminator"]))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gg["generator"]))
  # The generator loss has a gradient for D too: the step must not apply it (next test).
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gg["discriminator"]))


def _d_loss_like_step(model, state, d_params, x, y, smoothing=0.0, r1_gamma=0.0):
  """The discriminator loss as the step computes it (same noise key), written out again: BCE
  with target 1 - smoothing on real images, 0 on fakes, + r1_gamma / 2 * ||grad_x D(x)||^2."""
  key = jax.random.fold_in(state.rng, state.step)
  z = jax.random.normal(key, (x.shape[0], model.latent_dim))
  variables = {"params": state.params, **state.model_state}
  fake = jax.lax.stop_gradient(model.apply(variables, z, y, True, method="generate",
                                           mutable=["batch_stats"])[0])
  p = {**state.params, "discriminator": d_params}
  real = model.apply({"params": p, **state.model_state}, x, y, method="discriminate")
  fake_logits = model.apply({"params": p, **state.model_state}, fake, y, method="discriminate")
  real_target = 1.0 - smoothing
  real_bce = real_target * jax.nn.softplus(-real) + (1 - real_target) * jax.nn.softplus(real)
  d_of_x = lambda images: model.apply({"params": p, **state.model_state}, images, y,
                                      method="discriminate").sum()
  r1 = jnp.square(jax.grad(d_of_x)(x)).sum(axis=(1, 2, 3))
  return (real_bce + jax.nn.softplus(fake_logits) + 0.5 * r1_gamma * r1).mean()


def test_r1_penalty_is_the_squared_input_gradient_norm():
  w = jnp.arange(12.0).reshape(1, 2, 2, 3) / 10
  discriminate = lambda x, y: jnp.sum(w * x, axis=(1, 2, 3)) ** 2 + y  # grad: 2 (w.x) w
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 3))
  y = jnp.arange(4.0)
  expected = (2 * jnp.sum(w * x, axis=(1, 2, 3))) ** 2 * jnp.sum(w * w)
  np.testing.assert_allclose(dcgan.r1_penalty(discriminate, x, y), expected, rtol=1e-5)


@pytest.mark.parametrize("options", [
    {}, pytest.param({"gan_label_smoothing": 0.1, "gan_r1_gamma": 5.0, "gan_d_learning_rate": 4e-4},
                     marks=pytest.mark.slow),
    pytest.param({"gan_hidden": 0}, marks=pytest.mark.slow)])
def test_generator_step_leaves_the_discriminator_as_its_own_update_left_it(mnist_slice, options):
  """After a full step, D equals D after its own Adam update alone (at D's learning rate, with
  smoothing and R1 where set): G's update changed nothing in D, and G changed (its update ran),
  while D's update did not touch G before it."""
  config, family, model, tx, state = _setup(**options)
  step = compile_once(family.training.step(model, tx, config))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:32]))
  y = jnp.asarray(mnist_slice[1][:32])
  new, _ = step(state, x, y)
  d_grads = compile_once(jax.grad(lambda dp: _d_loss_like_step(
      model, state, dp, x, y, config.model.gan_label_smoothing, config.model.gan_r1_gamma)))(
          state.params["discriminator"])
  d_adam = optax.adam(options.get("gan_d_learning_rate", config.train.learning_rate), b1=0.5)
  updates, _ = d_adam.update(d_grads, d_adam.init(state.params["discriminator"]),
                             state.params["discriminator"])
  expected_d = jax.tree.map(lambda p, u: p + u, state.params["discriminator"], updates)
  for a, b in zip(jax.tree.leaves(new.params["discriminator"]), jax.tree.leaves(expected_d)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params["generator"]),
                                                      jax.tree.leaves(state.params["generator"])))
  # The EMA generator moved toward the new weights by 1 - its warmed-up decay at step 1.
  rate = min(config.model.gan_ema_decay, 2 / 11)
  for ema, old, cur in zip(jax.tree.leaves(new.model_state["ema"]["generator"]),
                           jax.tree.leaves(state.params["generator"]),
                           jax.tree.leaves(new.params["generator"])):
    np.testing.assert_allclose(ema, old + (1 - rate) * (cur - old), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ema_generator_has_batch_stats_of_its_own_and_samples_with_them(mnist_slice):
  config, family, model, tx, state = _setup()
  step = compile_once(family.training.step(model, tx, config))
  x = train_lib.to_float(jnp.asarray(mnist_slice[0][:32]))
  y = jnp.asarray(mnist_slice[1][:32])
  for _ in range(3):
    previous, (state, _) = state, step(state, x, y)
  # The last step's EMA statistics: the EMA weights run in train mode on that step's noise.
  z = jax.random.normal(jax.random.fold_in(previous.rng, previous.step), (32, model.latent_dim))
  ema = state.model_state["ema"]
  variables = {"params": {**state.params, "generator": ema["generator"]},
               "batch_stats": {"generator": previous.model_state["ema"]["batch_stats"]}}
  _, expected = model.apply(variables, z, y, True, method="generate", mutable=["batch_stats"])
  for a, b in zip(jax.tree.leaves(ema["batch_stats"]),
                  jax.tree.leaves(expected["batch_stats"]["generator"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(  # Not the live generator's statistics.
      jax.tree.leaves(ema["batch_stats"]), jax.tree.leaves(state.model_state["batch_stats"])))
  # Sampling reads the EMA statistics: the live ones do not matter to it.
  sample = lambda s: model.apply(s.variables(), y[:8], method="sample",
                                 rngs={"sample": jax.random.PRNGKey(1)})
  live_scrambled = state.replace(model_state={**state.model_state, "batch_stats": jax.tree.map(
      lambda v: v + 1.0, state.model_state["batch_stats"])})
  np.testing.assert_array_equal(sample(state), sample(live_scrambled))
  # Without them (older runs, --nogan_ema_batch_stats) it falls back to the live statistics.
  _, family, model, tx, plain = _setup(gan_ema_batch_stats=False)
  assert "batch_stats" not in plain.model_state["ema"]
  plain_scrambled = plain.replace(model_state={**plain.model_state, "batch_stats": jax.tree.map(
      lambda v: v + 1.0, plain.model_state["batch_stats"])})
  assert not np.array_equal(sample(plain), sample(plain_scrambled))


@pytest.mark.slow
def test_dcgan_run_is_deterministic_resumable_and_snapshots(tmp_path):
  quiet = lambda *a: None
  straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
  config = lambda epochs: tiny_config("cond_dcgan", num_epochs=epochs)  # hidden layers: 16
  trainer.train_and_evaluate(config(2), straight, print_fn=quiet)
  trainer.train_and_evaluate(config(1), resumed, print_fn=quiet)
  trainer.train_and_evaluate(config(2), resumed, print_fn=quiet)
  a, b = runs.restore_run(straight)[3], runs.restore_run(resumed)[3]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # params, both Adams, BN stats, EMA
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for name in ("samples_epoch_001.png", "samples_epoch_002.png", "samples.png", "curves.png"):
    assert (tmp_path / "a" / name).exists(), name
  records = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  tests = [r for r in records if r["split"] == "test"]
  assert len(tests) == 2 and len(tests[-1]["sample_digit_hist"]) == 10
  assert abs(sum(tests[-1]["sample_digit_hist"]) - 1) < 1e-6
  assert 0 <= tests[-1]["sample_digit_entropy"] <= np.log(10) + 1e-6
