"""Flow matching on the straight path (rectified flow; Lipman et al. 2023, Liu et al. 2023), written
out as small pure functions, shared by the latent prior (models/latent_flow.py) and pixel models.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1, and x_t = (1 - t) x0 + t x1. The network
v(x_t, t) regresses the path's velocity x1 - x0; the minimiser of that regression is the marginal
velocity E[x1 - x0 | x_t], whose ODE dx/dt = v(x, t) carries N(0, I) at t = 0 to the data at t = 1.
Class conditioning uses one extra "no label" class (index num_classes): labels are dropped to it
in training, and classifier-free guidance mixes the two velocities when sampling.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

SOLVERS = ("euler", "heun")
TIME_SAMPLINGS = ("uniform", "logit_normal")

Velocity = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # (x (B, ...), t (B,)) -> like x


def _broadcast(t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """(B,) times -> (B, 1, ..., 1), to scale examples of any rank."""
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def interpolate(noise: jnp.ndarray, data: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """x_t = (1 - t) noise + t data, with t of shape (B,)."""
  t = _broadcast(t, data)
  return (1.0 - t) * noise + t * data


def target_velocity(noise: jnp.ndarray, data: jnp.ndarray) -> jnp.ndarray:
  """d x_t / dt of the straight path: data - noise (the same at every t)."""
  return data - noise


def sample_time(key, n: int, distribution: str = "uniform") -> jnp.ndarray:
  """(n,) training times in (0, 1): uniform, or logit-normal (sigmoid of N(0, 1); Esser et al.
  2024), which spends more of the training on the middle of the path."""
  if distribution == "uniform":
    return jax.random.uniform(key, (n,))
  if distribution == "logit_normal":
    return jax.nn.sigmoid(jax.random.normal(key, (n,)))
  raise ValueError(f"time distribution {distribution!r} is unknown; choose one of "
                   f"{', '.join(TIME_SAMPLINGS)}")


def matching_loss(velocity: Velocity, data: jnp.ndarray, key,
                  time_distribution: str = "uniform") -> jnp.ndarray:
  """Per-example (B,) mean squared error between velocity(x_t, t) and data - noise, with fresh
  noise and times from key: the conditional flow-matching objective."""
  noise_key, time_key = jax.random.split(key)
  noise = jax.random.normal(noise_key, data.shape, data.dtype)
  t = sample_time(time_key, data.shape[0], time_distribution)
  error = velocity(interpolate(noise, data, t), t) - target_velocity(noise, data)
  return jnp.mean(jnp.square(error).reshape(data.shape[0], -1), axis=1)


def integrate(velocity: Velocity, x0, steps: int, solver: str = "heun", t0: float = 0.0,
              t1: float = 1.0):
  """x(t1) of dx/dt = velocity(x, t) from x(t0) = x0, in `steps` equal steps (t1 < t0 runs the
  ODE backwards). x may be a pytree of (B, ...) arrays (then velocity returns one alike).

  euler: one velocity evaluation per step, error O(1/steps).
  heun: the trapezoidal predictor-corrector, two evaluations per step, error O(1/steps^2)."""
  if solver not in SOLVERS:
    raise ValueError(f"solver {solver!r} is unknown; choose one of {', '.join(SOLVERS)}")
  if steps < 1:
    raise ValueError(f"the ODE needs at least one step, got {steps}")
  h = (t1 - t0) / steps
  first = jax.tree.leaves(x0)[0]
  times = lambda t: jnp.full((first.shape[0],), t, first.dtype)
  plus = lambda x, scale, v: jax.tree.map(lambda a, b: a + scale * b, x, v)

  def euler(i, x):
    t = t0 + i * h
    return plus(x, h, velocity(x, times(t)))

  def heun(i, x):
    t = t0 + i * h
    v = velocity(x, times(t))
    v_next = velocity(plus(x, h, v), times(t + h))
    return plus(x, 0.5 * h, jax.tree.map(jnp.add, v, v_next))

  return jax.lax.fori_loop(0, steps, euler if solver == "euler" else heun, x0)


def divergence_estimate(velocity: Velocity, x: jnp.ndarray, t: jnp.ndarray,
                        probes: jnp.ndarray):
  """(velocity(x, t), Hutchinson's estimate of its divergence (B,)): the mean over probes
  (P, *x.shape) of e . (dv/dx) e, one Jacobian-vector product each (unbiased for Rademacher or
  Gaussian probes; exact for a diagonal Jacobian with Rademacher ones)."""
  def one(e):
    v, jv = jax.jvp(lambda z: velocity(z, t), (x,), (e,))
    return v, jnp.sum((e * jv).reshape(x.shape[0], -1), axis=1)

  v, div = jax.vmap(one)(probes)
  return v[0], jnp.mean(div, axis=0)


def log_likelihood(velocity: Velocity, x1: jnp.ndarray, key, steps: int,
                   solver: str = "heun", num_probes: int = 1) -> jnp.ndarray:
  """(B,) log-density of x1 under the flow's ODE model (the instantaneous change of variables;
  Chen et al. 2018, FFJORD): x runs from t = 1 back to the noise at t = 0 while
  a(t) = -int_t^1 div v accumulates, and log p_1(x1) = log N(x(0); 0, I) + a(0). The divergence is
  Hutchinson's estimate with Rademacher probes held fixed along the path (unbiased per example)."""
  probes = jax.random.rademacher(key, (num_probes, *x1.shape), x1.dtype)

  def augmented(state, t):
    v, div = divergence_estimate(velocity, state[0], t, probes)
    return v, div  # d(x, a)/dt; integrating from 1 to 0 makes a(0) = -int_0^1 div v dt.

  x0, a0 = integrate(augmented, (x1, jnp.zeros(x1.shape[0], x1.dtype)), steps, solver,
                     t0=1.0, t1=0.0)
  flat = x0.reshape(x0.shape[0], -1)
  log_noise = -0.5 * jnp.sum(jnp.square(flat), axis=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)
  return log_noise + a0


def function_evaluations(steps: int, solver: str) -> int:
  """Network evaluations of one `integrate` (a unit of sampling cost)."""
  return steps * (2 if solver == "heun" else 1)


def drop_labels(key, labels: jnp.ndarray, probability: float, null_label: int) -> jnp.ndarray:
  """Each label replaced by null_label with the given probability (classifier-free guidance
  training: one network learns the conditional and the unconditional velocity)."""
  drop = jax.random.bernoulli(key, probability, labels.shape)
  return jnp.where(drop, null_label, labels)


def guided_velocity(conditional_velocity: Callable, labels: jnp.ndarray, null_label: int,
                    scale: float) -> Velocity:
  """(x, t) -> v_null + scale (v_labels - v_null): classifier-free guidance (Ho & Salimans 2022).
  scale 1 is the plain conditional velocity (one evaluation); others batch both in one call.
  conditional_velocity: (x, t, labels) -> velocity."""
  if scale == 1.0:
    return lambda x, t: conditional_velocity(x, t, labels)
  null = jnp.full_like(labels, null_label)

  def velocity(x, t):
    both = conditional_velocity(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                                jnp.concatenate([labels, null]))
    with_labels, without = jnp.split(both, 2)
    return without + scale * (with_labels - without)

  return velocity


def autoguided_velocity(velocity: Velocity, guide: Velocity, scale: float) -> Velocity:
  """(x, t) -> v_guide + scale (v - v_guide): autoguidance (Karras et al. 2024), the model
  extrapolated away from a weaker version of itself (`guide`: smaller and/or less trained).
  scale 1 is the model alone, 0 the guide alone."""
  def guided(x, t):
    v_guide = guide(x, t)
    return v_guide + scale * (velocity(x, t) - v_guide)

  return guided


def time_embedding(t: jnp.ndarray, dim: int, max_period: float = 1000.0) -> jnp.ndarray:
  """(B,) times in [0, 1] -> (B, dim) sinusoidal features (Vaswani et al.; DDPM's embedding of
  the time scaled to [0, max_period])."""
  half = dim // 2
  frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
  angles = (t * max_period)[:, None] * frequencies[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def sampling_velocity(module, name: str, labels: jnp.ndarray, num_classes: int,
                      guidance: float, conditional: bool) -> Velocity:
  """The velocity a flow family samples with, from inside its bound Flax module: its submodule
  `name` as a pure function of the weights' moving average (collection 'ema') when there is one,
  else of the trained weights; guided by `labels` when conditional, else told "label 0"."""
  network = getattr(module, name)
  if module.has_variable("ema", name):
    params = module.get_variable("ema", name)
  else:
    params = network.variables["params"]
  pure = network.clone(parent=None)  # A pure function of params: safe inside fori_loop.
  velocity = lambda x, t, y: pure.apply({"params": params}, x, t, y)
  if conditional:
    return guided_velocity(velocity, labels, num_classes, guidance)
  return lambda x, t: velocity(x, t, jnp.zeros_like(labels))
