"""The flow-matching core (mnistgen_jax/flow.py), tested like optax/chex: each small function
against a closed form, and the whole (objective + sampler) on a 2-D Gaussian mixture."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnistgen_jax import flow

# A 2-D mixture of three anisotropic Gaussians: weights, means, covariances.
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[2.0, 0.0], [-1.5, 1.5], [0.0, -2.5]])
COVS = np.array([[[0.30, 0.10], [0.10, 0.20]],
                 [[0.20, -0.05], [-0.05, 0.40]],
                 [[0.50, 0.0], [0.0, 0.10]]])


def mixture_moments():
  mean = WEIGHTS @ MEANS
  second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(WEIGHTS, MEANS, COVS))
  return mean, second - np.outer(mean, mean)


def mixture_samples(key, n):
  k1, k2 = jax.random.split(key)
  component = jax.random.choice(k1, 3, (n,), p=jnp.asarray(WEIGHTS))
  chol = jnp.asarray(np.linalg.cholesky(COVS))[component]
  eps = jax.random.normal(k2, (n, 2))
  return jnp.asarray(MEANS)[component] + jnp.einsum("nij,nj->ni", chol, eps)


def mixture_velocity(x, t, covs=COVS):
  """The exact marginal velocity E[x1 - x0 | x_t = x] of the straight path from N(0, I) to the
  mixture: per component, x_t ~ N(t m, C = (1-t)^2 I + t^2 S), E[x1 | x_t] = m + t S C^-1 (x - t m)
  and E[x0 | x_t] = (1 - t) C^-1 (x - t m); mixed by the components' posterior weights.
  covs: the components' covariances S (the mixture's own by default)."""
  means, covs = jnp.asarray(MEANS), jnp.asarray(covs)
  s = t[:, None, None]                                                  # (B, 1, 1)
  c = (1 - s[..., None]) ** 2 * jnp.eye(2) + s[..., None] ** 2 * covs   # (B, K, 2, 2)
  r = x[:, None, :] - s * means[None]                                   # (B, K, 2)
  a, b, d = c[..., 0, 0], c[..., 0, 1], c[..., 1, 1]                    # C is symmetric 2x2
  det = a * d - b * b
  solved = jnp.stack([d * r[..., 0] - b * r[..., 1],
                      a * r[..., 1] - b * r[..., 0]], -1) / det[..., None]  # C^-1 (x - t m)
  log_w = jnp.log(jnp.asarray(WEIGHTS)) - 0.5 * jnp.sum(r * solved, -1) - 0.5 * jnp.log(det)
  w = jax.nn.softmax(log_w, axis=-1)[..., None]
  x1 = means[None] + s * jnp.einsum("kij,bkj->bki", covs, solved)
  x0 = (1 - s) * solved
  return jnp.sum(w * (x1 - x0), axis=1)


def test_interpolation_runs_from_noise_to_data_at_the_target_velocity():
  noise, data = jnp.array([[1.0, -2.0]]), jnp.array([[3.0, 5.0]])
  np.testing.assert_allclose(flow.interpolate(noise, data, jnp.zeros(1)), noise)
  np.testing.assert_allclose(flow.interpolate(noise, data, jnp.ones(1)), data)
  np.testing.assert_allclose(flow.interpolate(noise, data, jnp.array([0.25])), [[1.5, -0.25]])
  t, h = jnp.array([0.3]), 1e-2  # The path's derivative is the target, at every t.
  slope = (flow.interpolate(noise, data, t + h) - flow.interpolate(noise, data, t)) / h
  np.testing.assert_allclose(slope, flow.target_velocity(noise, data), rtol=1e-4)
  images = jnp.ones((2, 4, 4, 1))  # Times broadcast over images of any rank.
  assert flow.interpolate(0 * images, images, jnp.array([0.1, 0.9]))[1, 2, 3, 0] == 0.9


def test_matching_loss_is_zero_for_the_exact_field_of_a_point_mass():
  """All data at c: x0 = (x_t - t c) / (1 - t) is known from x_t, so the velocity
  (c - x) / (1 - t) matches every target exactly; any other field does not."""
  c = jnp.array([[1.0, -2.0, 0.5]])
  data = jnp.repeat(c, 64, axis=0)
  exact = lambda x, t: (c - x) / (1 - t[:, None])
  loss = flow.matching_loss(exact, data, jax.random.PRNGKey(0))
  assert loss.shape == (64,)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  wrong = flow.matching_loss(lambda x, t: 0.9 * exact(x, t), data, jax.random.PRNGKey(0))
  assert wrong.min() > 1e-4
  # The loss is the per-example mean over every non-batch axis.
  images = jnp.ones((3, 4, 4, 1))
  zero = flow.matching_loss(lambda x, t: jnp.zeros_like(x), images, jax.random.PRNGKey(1))
  assert zero.shape == (3,) and np.all(zero > 0)


@pytest.mark.parametrize("distribution,variance", [("uniform", 1 / 12), ("logit_normal", None)])
def test_time_sampling(distribution, variance):
  t = np.asarray(flow.sample_time(jax.random.PRNGKey(0), 100_000, distribution))
  assert t.shape == (100_000,) and 0 < t.min() and t.max() < 1
  assert abs(t.mean() - 0.5) < 0.005  # Both are symmetric about 1/2.
  if variance is not None:
    assert abs(t.var() - variance) < 0.002
  else:  # Logit-normal puts more mass in the middle than uniform.
    assert np.mean(np.abs(t - 0.5) < 0.25) > 0.6
  with pytest.raises(ValueError, match="choose one of uniform, logit_normal"):
    flow.sample_time(jax.random.PRNGKey(0), 3, "beta")


def test_integrators_on_a_linear_field_converge_at_their_orders():
  """dx/dt = a x: x(1) = x0 e^a. Euler's error halves with twice the steps (order 1), Heun's
  quarters (order 2), and Heun beats Euler at equal steps and at equal evaluations."""
  a, x0 = -1.3, jnp.array([[1.0], [2.0]])
  exact = np.asarray(x0) * np.exp(a)
  field = lambda x, t: a * x
  error = {(s, n): float(np.abs(flow.integrate(field, x0, n, s) - exact).max())
           for s in flow.SOLVERS for n in (8, 16, 32)}
  for n in (8, 16):
    assert 1.8 < error["euler", n] / error["euler", 2 * n] < 2.2
    assert 3.6 < error["heun", n] / error["heun", 2 * n] < 4.4
  for n in (8, 16, 32):
    assert error["heun", n] < error["euler", n] / 10
  assert error["heun", 8] < error["euler", 16]  # Same 16 evaluations.
  assert flow.function_evaluations(8, "heun") == flow.function_evaluations(16, "euler") == 16


def test_integrators_on_a_time_dependent_field_and_backwards():
  """dx/dt = 2t: x(1) = x(0) + 1 (Heun is exact for fields linear in t); integrating from 1 to 0
  undoes it."""
  field = lambda x, t: 2 * t[:, None] * jnp.ones_like(x)
  x0 = jnp.array([[0.5, -1.0]])
  np.testing.assert_allclose(flow.integrate(field, x0, 3, "heun"), x0 + 1, atol=1e-6)
  np.testing.assert_allclose(flow.integrate(field, x0, 4, "euler"), x0 + 1 - 1 / 4, atol=1e-6)
  there = flow.integrate(field, x0, 5, "heun")
  np.testing.assert_allclose(flow.integrate(field, there, 5, "heun", t0=1.0, t1=0.0), x0,
                             atol=1e-6)
  # A straight path is integrated exactly by one Euler step.
  noise, data = jnp.array([[1.0, 2.0]]), jnp.array([[-3.0, 0.5]])
  straight = lambda x, t: flow.target_velocity(noise, data)
  np.testing.assert_allclose(flow.integrate(straight, noise, 1, "euler"), data, atol=1e-6)
  with pytest.raises(ValueError, match="choose one of euler, heun"):
    flow.integrate(field, x0, 3, "rk4")
  with pytest.raises(ValueError, match="at least one step"):
    flow.integrate(field, x0, 0)


def test_the_exact_mixture_velocity_carries_noise_to_the_mixture():
  """The sampler with the analytic marginal field reproduces the mixture's mean and covariance,
  and Heun gets closer than Euler at the same number of steps."""
  mean, cov = mixture_moments()
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000, 2))
  sampled = {s: np.asarray(flow.integrate(mixture_velocity, noise, 100, s)) for s in flow.SOLVERS}
  x = sampled["heun"]
  np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.06)
  few = {s: np.asarray(flow.integrate(mixture_velocity, noise, 4, s)) for s in flow.SOLVERS}
  cov_error = {s: np.abs(np.cov(few[s], rowvar=False) - cov).max() for s in flow.SOLVERS}
  assert cov_error["heun"] < cov_error["euler"]
  # Samples fall into the components in their proportions (nearest mean).
  component = np.argmin(((x[:, None] - MEANS[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(component, minlength=3) / len(x), WEIGHTS, atol=0.02)


class _TinyVelocity(nn.Module):
  @nn.compact
  def __call__(self, x, t):
    h = jnp.concatenate([x, flow.time_embedding(t, 16)], axis=-1)
    for _ in range(3):
      h = nn.silu(nn.Dense(128)(h))
    return nn.Dense(2)(h)


@pytest.mark.slow
def test_a_network_trained_by_the_objective_samples_the_mixture():
  """The objective end to end: an MLP regressed on the straight-path targets, sampled by Heun,
  gives the mixture's mean and covariance, and its loss approaches the exact field's."""
  net = _TinyVelocity()
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
  tx = optax.adam(optax.cosine_decay_schedule(3e-3, 3000))
  loss = lambda p, x, k: flow.matching_loss(lambda z, t: net.apply(p, z, t), x, k).mean()

  def step(carry, key):
    p, opt = carry
    data_key, loss_key = jax.random.split(key)
    value, grads = jax.value_and_grad(loss)(p, mixture_samples(data_key, 256), loss_key)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), value

  (params, _), losses = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
      (params, tx.init(params)), jax.random.split(jax.random.PRNGKey(1), 3000))
  assert losses[-300:].mean() < 0.8 * losses[:10].mean()
  held_out, key = mixture_samples(jax.random.PRNGKey(2), 4096), jax.random.PRNGKey(3)
  exact_loss = flow.matching_loss(mixture_velocity, held_out, key).mean()
  assert loss(params, held_out, key) < 1.1 * exact_loss  # Near the objective's minimum.
  noise = jax.random.normal(jax.random.PRNGKey(4), (20_000, 2))
  x = np.asarray(flow.integrate(lambda z, t: net.apply(params, z, t), noise, 50, "heun"))
  mean, cov = mixture_moments()
  np.testing.assert_allclose(x.mean(0), mean, atol=0.1)
  np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.25)


def test_classifier_free_guidance_mixes_the_two_velocities():
  # A toy conditional field: the label shifts the velocity; label 3 is "no label".
  field = lambda x, t, labels: x * t[:, None] + labels[:, None].astype(x.dtype)
  x, t, labels = jnp.ones((2, 2)), jnp.array([0.5, 0.5]), jnp.array([0, 2])
  plain = flow.guided_velocity(field, labels, 3, 1.0)(x, t)
  np.testing.assert_allclose(plain, field(x, t, labels))
  unconditional = flow.guided_velocity(field, labels, 3, 0.0)(x, t)
  np.testing.assert_allclose(unconditional, field(x, t, jnp.array([3, 3])))
  guided = flow.guided_velocity(field, labels, 3, 2.5)(x, t)
  np.testing.assert_allclose(guided, unconditional + 2.5 * (plain - unconditional), rtol=1e-6)


def test_autoguidance_extrapolates_from_the_guide():
  model = lambda x, t: 2.0 * x + t[:, None]
  guide = lambda x, t: x - 1.0
  x, t = jnp.array([[1.0, -2.0], [0.5, 3.0]]), jnp.array([0.2, 0.7])
  np.testing.assert_allclose(flow.autoguided_velocity(model, guide, 1.0)(x, t), model(x, t))
  np.testing.assert_allclose(flow.autoguided_velocity(model, guide, 0.0)(x, t), guide(x, t))
  np.testing.assert_allclose(flow.autoguided_velocity(model, guide, 2.5)(x, t),
                             guide(x, t) + 2.5 * (model(x, t) - guide(x, t)), rtol=1e-6)


def _within_component_spread(x):
  """Mean squared distance of samples to their nearest mixture mean, and the share per mean."""
  distances = ((x[:, None] - MEANS[None]) ** 2).sum(-1)
  component = distances.argmin(1)
  return distances.min(1).mean(), np.bincount(component, minlength=3) / len(x)


@pytest.mark.slow
def test_autoguidance_by_a_blurrier_field_sharpens_the_components_and_keeps_the_modes():
  """Karras et al.'s mechanism on a closed form: a guide that is a worse fit of the same
  mixture (components three times as wide) makes the extrapolated field concentrate samples
  near the modes, more so for larger scales, without changing which mode a sample lands in
  much (no mode dropped)."""
  guide = lambda x, t: mixture_velocity(x, t, 3.0 * COVS)
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000, 2))
  spread, share = {}, {}
  for scale in (0.0, 1.0, 2.0):
    field = flow.autoguided_velocity(mixture_velocity, guide, scale)
    spread[scale], share[scale] = _within_component_spread(
        np.asarray(flow.integrate(field, noise, 100, "heun")))
  # The mixture's own spread (scale 1) is E tr(S_k) by component weight: 0.5, 0.6 and 0.6.
  np.testing.assert_allclose(spread[1.0], WEIGHTS @ np.trace(COVS, axis1=1, axis2=2), rtol=0.05)
  assert spread[2.0] < 0.8 * spread[1.0] < 0.8 * 0.5 * spread[0.0]
  np.testing.assert_allclose(share[2.0], WEIGHTS, atol=0.05)


def test_label_dropout():
  labels = jnp.arange(10_000) % 10
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(flow.drop_labels(key, labels, 0.0, 10), labels)
  assert np.all(flow.drop_labels(key, labels, 1.0, 10) == 10)
  dropped = np.asarray(flow.drop_labels(key, labels, 0.3, 10))
  assert abs(np.mean(dropped == 10) - 0.3) < 0.02
  kept = dropped != 10
  np.testing.assert_array_equal(dropped[kept], np.asarray(labels)[kept])


def test_time_embedding():
  t = jnp.array([0.0, 0.001, 0.5, 1.0])
  e = np.asarray(flow.time_embedding(t, 64))
  assert e.shape == (4, 64) and np.all(np.abs(e) <= 1)
  np.testing.assert_allclose(e[0], [0] * 32 + [1] * 32, atol=1e-7)  # sin 0, cos 0
  distances = np.linalg.norm(e[:, None] - e[None], axis=-1)
  assert distances[np.triu_indices(4, 1)].min() > 0.1  # Nearby times are told apart.


def test_hutchinson_divergence_is_exact_for_a_diagonal_jacobian_and_unbiased_otherwise():
  x, t = jax.random.normal(jax.random.PRNGKey(0), (3, 4)), jnp.full((3,), 0.3)
  scale = jnp.array([0.5, -2.0, 1.5, 3.0])
  probes = jax.random.rademacher(jax.random.PRNGKey(1), (1, 3, 4), jnp.float32)
  v, div = flow.divergence_estimate(lambda z, s: z * scale * s[:, None], x, t, probes)
  np.testing.assert_allclose(v, x * scale * 0.3, rtol=1e-6)
  np.testing.assert_allclose(div, np.full(3, 0.3 * scale.sum()), rtol=1e-5)  # one probe: exact
  a = jax.random.normal(jax.random.PRNGKey(2), (4, 4))  # dense: off-diagonal terms cancel on average
  many = jax.random.rademacher(jax.random.PRNGKey(3), (20000, 3, 4), jnp.float32)
  _, div = flow.divergence_estimate(lambda z, s: z @ a.T, x, t, many)
  np.testing.assert_allclose(div, np.full(3, np.trace(a)), atol=0.06)
  _, one = flow.divergence_estimate(lambda z, s: z @ a.T, x, t, many[:1])
  assert np.abs(np.asarray(one) - np.trace(a)).max() > 1e-3  # a single probe is only unbiased


@pytest.mark.parametrize("solver, steps, tol", [("heun", 64, 5e-3), ("euler", 512, 3e-2)])
def test_ode_log_likelihood_of_the_exact_gaussian_flow_is_the_gaussian_density(solver, steps, tol):
  # Data N(mu, diag(sigma^2)): the straight path's marginal velocity is affine, known in closed
  # form (x_t = t mu + s_t z with s_t^2 = (1-t)^2 + t^2 sigma^2), so log p_1 must be the density.
  mu, sigma = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.5, 1.5, 0.2])

  def velocity(x, t):
    t = t[:, None]
    s2 = (1 - t) ** 2 + t ** 2 * sigma ** 2
    return mu + (t * sigma ** 2 - (1 - t)) / s2 * (x - t * mu)

  x1 = mu + sigma * jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  log_p = flow.log_likelihood(velocity, x1, jax.random.PRNGKey(1), steps, solver)
  expected = jax.scipy.stats.norm.logpdf(x1, mu, sigma).sum(axis=1)
  np.testing.assert_allclose(log_p, expected, atol=tol)
  # The same flow carries the data point back to the noise it came from.
  z = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  back = flow.integrate(velocity, x1, steps, solver, t0=1.0, t1=0.0)
  np.testing.assert_allclose(back, z, atol=tol * 10)
