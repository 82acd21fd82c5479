"""`flow` and `cond_flow`: flow matching in pixel space with a small time-conditioned U-Net.

The objective, the time sampling, the ODE solvers and classifier-free guidance are the shared
core's (mnistgen_jax/flow.py); this file is only the network and the family:
- Data are the images scaled to [-1, 1] (x1); noise x0 ~ N(0, I) of the same shape. Samples are
  the ODE's end point scaled back and clipped to [0, 1].
- U-Net: a residual block (GroupNorm, SiLU, 3x3 conv, the time/label embedding added) per level
  (config.model.channels: one width per resolution, 28 -> 14 -> 7), stride-2 convolutions down,
  sub-pixel convolutions up, skip connections, optional self-attention at the lowest resolution,
  and a zero-initialised output convolution (training starts from v = 0).
- `cond_flow` adds a label embedding with one extra "no label" row, trained with label dropout so
  that sampling can use classifier-free guidance (config.sampling.guidance).
- Sampling uses an exponential moving average of the weights (config.model.ema_decay > 0).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnistgen_jax import cpu_compiler, data, flow
from mnistgen_jax import train as train_lib
from mnistgen_jax import viz
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import Conv, ConvChoice, Upsample, depth_to_space, space_to_depth
from mnistgen_jax.models.registry import register

NETWORK = "unet"  # the velocity network's entry in params (and in the 'ema' collection)


def _norm(channels: int) -> nn.Module:
  """GroupNorm with up to 8 groups (as many as divide the channels)."""
  return nn.GroupNorm(num_groups=max(g for g in (8, 4, 2, 1) if channels % g == 0))


class ResidualBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, condition):
    h = Conv(self.features)(nn.silu(_norm(x.shape[-1])(x)))
    h = h + nn.Dense(self.features)(condition)[:, None, None, :]
    h = Conv(self.features, kernel_init=nn.initializers.zeros)(nn.silu(_norm(self.features)(h)))
    skip = x if x.shape[-1] == self.features else Conv(self.features, 1)(x)
    return skip + h


class SelfAttention(nn.Module):
  heads: int = 4

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    tokens = _norm(c)(x).reshape(b, h * w, c)
    heads = max(n for n in range(1, self.heads + 1) if c % n == 0)
    out = nn.MultiHeadDotProductAttention(num_heads=heads, out_kernel_init=nn.initializers.zeros)(
        tokens, tokens)
    return x + out.reshape(b, h, w, c)


class UNet(nn.Module):
  """v(x, t, label) for images x (B, H, W, C) (or any grid, such as a spatial VAE's codes). H and
  W are zero-padded (at the bottom and right) to multiples of 2 ** (len(channels) - 1) and the
  output cropped back, so a 7x7 grid can be halved once. patch > 1 (H and W divisible by it): the
  network works on patch x patch blocks of pixels folded into channels (space_to_depth), patch^2
  times fewer positions per convolution."""
  channels: Sequence[int] = (32, 64, 64)
  attention: bool = True
  num_labels: int = 0  # 0: unconditional
  patch: int = 1

  @nn.compact
  def __call__(self, x, t, labels):
    if self.patch > 1:
      v = UNet(self.channels, self.attention, self.num_labels, name="folded")(
          space_to_depth(x, self.patch), t, labels)
      return depth_to_space(v, self.patch)
    size = x.shape[1:3]
    multiple = 2 ** (len(self.channels) - 1)
    x = jnp.pad(x, ((0, 0), (0, -size[0] % multiple), (0, -size[1] % multiple), (0, 0)))
    width = 4 * self.channels[0]
    condition = nn.Dense(width)(nn.silu(nn.Dense(width)(
        flow.time_embedding(t, self.channels[0]))))
    if self.num_labels:
      condition = condition + nn.Embed(self.num_labels + 1, width)(labels)
    condition = nn.silu(condition)
    h = Conv(self.channels[0])(x)
    skips = [h]
    for level, features in enumerate(self.channels):
      h = ResidualBlock(features)(h, condition)
      skips.append(h)
      if level < len(self.channels) - 1:
        h = Conv(features, stride=2)(h)
        skips.append(h)
    h = ResidualBlock(self.channels[-1])(h, condition)
    if self.attention:
      h = SelfAttention()(h)
    h = ResidualBlock(self.channels[-1])(h, condition)
    for level, features in reversed(list(enumerate(self.channels))):
      for _ in range(2):
        h = ResidualBlock(features)(jnp.concatenate([h, skips.pop()], axis=-1), condition)
      if level > 0:
        h = Upsample(self.channels[level - 1])(h)
    h = nn.silu(_norm(h.shape[-1])(h))
    return Conv(x.shape[-1], kernel_init=nn.initializers.zeros)(h)[:, :size[0], :size[1]]


class PixelFlow(nn.Module):
  image_shape: Sequence[int]
  num_classes: int
  conditional: bool = False
  channels: Sequence[int] = (32, 64, 64)
  attention: bool = True
  patch: int = 1
  time_sampling: str = "logit_normal"
  label_dropout: float = 0.1
  solver: str = "heun"
  sample_steps: int = 25
  guidance: float = 1.0
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  latent_interpolation = "lerp"  # (no codes: --interpolate does not apply)

  def setup(self):
    self.unet = UNet(self.channels, self.attention, self.num_classes if self.conditional else 0,
                     self.patch)

  def _labels(self, y):
    return y if self.conditional else jnp.zeros_like(y)

  def losses(self, x, y, train: bool = False):
    flow_key, label_key = jax.random.split(self.make_rng("sample"))
    labels = self._labels(y)
    if self.conditional and train:
      labels = flow.drop_labels(label_key, labels, self.label_dropout, self.num_classes)
    loss = flow.matching_loss(lambda xt, t: self.unet(xt, t, labels), 2.0 * x - 1.0, flow_key,
                              self.time_sampling)
    return {"loss": loss}

  def _velocity(self, y):
    return flow.sampling_velocity(self, NETWORK, y, self.num_classes, self.guidance,
                                  self.conditional)

  def _noise(self, y):
    return jax.random.normal(self.make_rng("sample"), (y.shape[0], *self.image_shape))

  def sample(self, y):
    x = flow.integrate(self._velocity(y), self._noise(y), self.sample_steps, self.solver)
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

  def log_density(self, u, y, steps: int, num_probes: int = 1):
    """(B,) log-density of continuous images u in [0, 1] (e.g. dequantized pixels) under the ODE
    of the sampling weights, given y for cond_flow (guidance 1): the flow's density of 2u - 1, plus
    D log 2 for that scaling. Solved with the configured solver in `steps` steps."""
    velocity = flow.sampling_velocity(self, NETWORK, y, self.num_classes, 1.0, self.conditional)
    log_p = flow.log_likelihood(velocity, 2.0 * u - 1.0, self.make_rng("sample"), steps,
                                self.solver, num_probes)
    return log_p + math.prod(u.shape[1:]) * math.log(2.0)

  def trajectory(self, y, frames: int):
    """(frames + 1, B, H, W, C): the samples at t = 0, 1/frames, ..., 1 of one ODE solve (the
    configured steps split evenly over the frames), in [0, 1]."""
    velocity = self._velocity(y)
    steps = max(1, self.sample_steps // frames)
    states = [self._noise(y)]
    for i in range(frames):
      states.append(flow.integrate(velocity, states[-1], steps, self.solver, t0=i / frames,
                                   t1=(i + 1) / frames))
    return jnp.clip((jnp.stack(states) + 1.0) / 2.0, 0.0, 1.0)


class PixelFlowTraining(Training):
  """The shared Adam step plus an EMA of the U-Net's weights, and a picture of the ODE. (No
  per-epoch snapshots: classifying 1000 samples of tens of U-Net evaluations each would cost a
  CPU epoch's time again.)"""

  def init_variables(self, config, variables, stage1):
    del stage1
    if config.model.ema_decay:
      variables = train_lib.with_average(variables, NETWORK)
    return variables

  def step(self, model, tx, config):
    update = train_lib.make_train_step(model, tx)

    def step(state, x, y):
      state, metrics = update(state, x, y)
      if config.model.ema_decay:
        state = train_lib.update_average(state, NETWORK, config.model.ema_decay)
      return state, metrics

    return step

  def report(self, model, variables, images, labels, workdir: str) -> dict:
    """trajectory.png: rows of samples from noise (left) to the digit (right)."""
    del images, labels
    frames = 8
    rows = jnp.arange(10, dtype=jnp.int32) % model.num_classes
    path = jax.jit(lambda v, y, k: model.apply(v, y, frames, method="trajectory",
                                               rngs={"sample": k}))(
        variables, rows, jax.random.PRNGKey(0))
    grid = jnp.transpose(path, (1, 0, 2, 3, 4)).reshape(-1, *path.shape[2:])
    viz.save_grid(os.path.join(workdir, "trajectory.png"), grid, frames + 1)
    return {}


def _builder(conditional: bool):
  def build(config, stage1=None):
    del stage1
    info = data.info(config.data.dataset)
    fields, sampling = config.model, config.sampling
    return PixelFlow(info.image_shape, info.num_classes, conditional,
                     channels=tuple(fields.channels), attention=fields.attention,
                     patch=fields.patch, time_sampling=fields.time_sampling,
                     label_dropout=fields.label_dropout, solver=sampling.solver,
                     sample_steps=sampling.sample_steps, guidance=sampling.guidance,
                     conv_choice=cpu_compiler.conv_choice(config))
  return build


for _name, _conditional in (("flow", False), ("cond_flow", True)):
  register(Family(_name, _builder(_conditional), PixelFlowTraining(), loss_name="velocity_mse",
                  description=("class-conditional " if _conditional else "") +
                  "flow matching in pixel space (U-Net velocity, Euler/Heun ODE)"))
