"""`latent_flow`: a flow-matching prior over the codes of a trained encoder family (stage 2).

The two-stage idea of Dai & Wipf (ICLR 2019): an auto-encoder's codes are not distributed like the
N(0, I) (or fitted Gaussian) it samples from, so a second model learns their distribution. Here
that model is an MLP velocity field trained by flow matching (mnistgen_jax/flow.py); sampling is
noise -> ODE (Euler or Heun, config.sampling.sample_steps) -> code -> the stage-1 decoder.

- Grid codes (a stage 1 with a `code_shape`, e.g. spatial_vae's 7x7xC): the velocity field is
  the pixel flows' U-Net (models/pixel_flow.UNet, the same module) over the grid, as in latent
  diffusion (Rombach et al. 2022); flat codes get the residual MLP below. Grid codes are
  standardised per channel (config.model.code_whitening=auto), so every position shares a scale.

- Codes are the stage-1 `encode` outputs, i.e. posterior means for the VAEs: decoding a mean is the
  model's own (sharpest) reconstruction, which is what the reconstruction FID scores, while
  decoding a draw of q(z|x) adds the posterior's noise, which the decoder turns into blur.
- Codes are standardised per dimension (or whitened: config.model.code_whitening=full) with
  statistics of the first training batch (data-dependent initialisation, like Glow's ActNorm),
  then fixed: they live in the `code_stats` collection.
- Stage 1 (every collection) sits in the `stage1` submodule, frozen: the codes are
  stop-gradient'ed and its parameters get no updates (the optimizer sets them to zero).
- A conditional prior (config.model.conditional, and always over a conditional stage 1 such as
  cond_vae) has a class-conditional velocity trained with label dropout, so sampling can use
  classifier-free guidance (config.sampling.guidance); an unconditional stage 1 then decodes the
  codes the label asked for.
- Sampling uses an exponential moving average of the velocity weights (config.model.ema_decay > 0).
- Autoguidance (Karras et al., "Guiding a Diffusion Model with a Bad Version of Itself", NeurIPS
  2024): a much smaller velocity network, the guide (config.model.guide_width), learns the same
  field beside the prior, and sampling extrapolates away from it, v = v_guide + w (v_prior -
  v_guide) (config.sampling.autoguidance = w; 1 is the prior alone). The paper's reasoning: the
  guide errs where the prior errs, only more, so the extrapolation pulls samples back toward the data (here, we
  expect, away from the gaps between digit clusters, where the decoder draws blends). Unlike
  classifier-free guidance it needs no labels.
"""
from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mnistgen_jax import cpu_compiler, data, flow
from mnistgen_jax import train as train_lib
from mnistgen_jax.errors import UserError
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import ConvChoice
from mnistgen_jax.models.pixel_flow import UNet
from mnistgen_jax.models.registry import register

STAGE1 = "stage1"  # the submodule (and variable subtree) holding the frozen stage-1 model


class VelocityMLP(nn.Module):
  """v(z, t, label): residual MLP blocks (pre-LayerNorm), each told the time (sinusoidal
  embedding) and the label (one extra embedding row for "no label")."""
  code_dim: int
  width: int = 256
  layers: int = 3
  num_labels: int = 0  # 0: unconditional

  @nn.compact
  def __call__(self, z, t, labels):
    condition = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(
        flow.time_embedding(t, 128))))
    if self.num_labels:
      condition = condition + nn.Embed(self.num_labels + 1, self.width)(labels)
    condition = nn.silu(condition)
    h = nn.Dense(self.width)(z)
    for _ in range(self.layers):
      r = nn.Dense(2 * self.width)(nn.LayerNorm()(h)) + nn.Dense(2 * self.width)(condition)
      h = h + nn.Dense(self.width)(nn.silu(r))
    # Zero-initialised output: training starts from v = 0, not from a random field.
    return nn.Dense(self.code_dim, kernel_init=nn.initializers.zeros)(nn.LayerNorm()(h))


class GridVelocity(nn.Module):
  """v(z, t, label) for flat codes of a (h, w, C) grid: the U-Net of the pixel flows on the grid."""
  code_shape: tuple
  channels: tuple
  attention: bool
  num_labels: int = 0

  @nn.compact
  def __call__(self, z, t, labels):
    grid = z.reshape(-1, *self.code_shape)
    return UNet(self.channels, self.attention, self.num_labels)(grid, t, labels).reshape(z.shape)


class LatentFlow(nn.Module):
  stage1: nn.Module            # the trained encoder family, frozen
  code_dim: int
  num_classes: int
  conditional: bool = False
  width: int = 256
  layers: int = 3
  time_sampling: str = "logit_normal"
  code_whitening: str = "diagonal"  # how code_stats' scale_tril was fitted (code_scale)
  code_shape: tuple = ()       # (h, w, C) of grid codes; () for flat codes
  grid_velocity: bool = False  # the U-Net over code_shape (else the MLP over the flat codes)
  channels: tuple = (64,)      # grid codes: the U-Net's widths, one per resolution
  attention: bool = True       # grid codes: self-attention at the U-Net's lowest resolution
  label_dropout: float = 0.1
  solver: str = "heun"
  sample_steps: int = 25
  guidance: float = 1.0
  guide_width: int = 0         # 0: no guide network
  guide_layers: int = 1
  autoguidance: float = 1.0
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)

  @property
  def latent_interpolation(self) -> str:  # --interpolate walks stage 1's codes
    return self.stage1.latent_interpolation

  def setup(self):
    num_labels = self.num_classes if self.conditional else 0
    if self.grid_velocity:  # The guide: a one-level U-Net guide_width wide, without attention.
      self.velocity = GridVelocity(self.code_shape, self.channels, self.attention, num_labels)
      if self.guide_width:
        self.guide = GridVelocity(self.code_shape, (self.guide_width,), False, num_labels)
    else:
      self.velocity = VelocityMLP(self.code_dim, self.width, self.layers, num_labels)
      if self.guide_width:
        self.guide = VelocityMLP(self.code_dim, self.guide_width, self.guide_layers, num_labels)
    self.code_mean = self.variable("code_stats", "mean", jnp.zeros, (self.code_dim,))
    self.code_scale = self.variable("code_stats", "scale_tril", jnp.eye, self.code_dim)

  def _labels(self, y):
    return y if self.conditional else jnp.zeros_like(y)

  def standardise(self, codes):
    """L^-1 (codes - mean). Diagonal L: a division; XLA:CPU's batched triangular solve would
    cost as much as the whole velocity network's step. Full L: its inverse (d x d), then a
    matmul."""
    centred = codes - self.code_mean.value
    scale = self.code_scale.value
    if self.code_whitening in ("diagonal", "channel", "global"):
      return centred / jnp.diag(scale)
    inverse = jax.scipy.linalg.solve_triangular(scale, jnp.eye(self.code_dim, dtype=scale.dtype),
                                                lower=True)
    return centred @ inverse.T

  def code_losses(self, codes, y, train: bool = False):
    """The flow-matching loss of stage-1 codes (what the training step reads: the codes are
    computed once, by FlowPriorTraining.train_inputs)."""
    z = self.standardise(codes)
    flow_key, label_key = jax.random.split(self.make_rng("sample"))
    labels = self._labels(y)
    if self.conditional and train:
      labels = flow.drop_labels(label_key, labels, self.label_dropout, self.num_classes)
    loss = flow.matching_loss(lambda zt, t: self.velocity(zt, t, labels), z, flow_key,
                              self.time_sampling)
    if not self.guide_width:
      return {"loss": loss}
    # The guide regresses the same noise, times and targets; its weights are disjoint from the
    # prior's and Adam is per weight, so the sum trains both exactly as two separate runs would.
    guide_loss = flow.matching_loss(lambda zt, t: self.guide(zt, t, labels), z, flow_key,
                                    self.time_sampling)
    return {"loss": loss + guide_loss, "prior_mse": loss, "guide_mse": guide_loss}

  def losses(self, x, y, train: bool = False):
    if self.is_initializing():  # Create every stage-1 variable (they come from the stage-1 run).
      self.stage1.decode(self.stage1.encode(x, y), y)
    return self.code_losses(jax.lax.stop_gradient(self.stage1.encode(x, y)), y, train)

  def sample_codes(self, y):
    """Codes of len(y) samples: N(0, I) noise carried to the code distribution by the ODE."""
    velocity = flow.sampling_velocity(self, "velocity", y, self.num_classes, self.guidance,
                                      self.conditional)
    if self.guide_width and self.autoguidance != 1.0:
      guide = flow.sampling_velocity(self, "guide", y, self.num_classes, self.guidance,
                                     self.conditional)
      velocity = flow.autoguided_velocity(velocity, guide, self.autoguidance)
    noise = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.code_dim))
    z = flow.integrate(velocity, noise, self.sample_steps, self.solver)
    return z @ self.code_scale.value.T + self.code_mean.value

  def sample(self, y):
    return self.stage1.decode(self.sample_codes(y), y)

  def reconstruct(self, x, y):
    return self.stage1.reconstruct(x, y)

  def encode(self, x, y):
    return self.stage1.encode(x, y)

  def decode(self, z, y):
    return self.stage1.decode(z, y)


class FlowPriorTraining(Training):
  """Adam on the velocity network only, over codes encoded once; code statistics from the first
  batch; an EMA of the velocity weights for sampling."""

  def optimizer(self, config, total_steps: int):
    trained = train_lib.make_optimizer(config, total_steps)
    labels = lambda params: {k: "frozen" if k == STAGE1 else "trained" for k in params}
    return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()}, labels)

  def init_variables(self, config, variables, stage1):
    variables = stage1.insert_into(variables, STAGE1)
    if config.model.ema_decay:  # The averages start at the initial weights.
      for name in velocity_networks(config):
        variables = train_lib.with_average(variables, name)
    return variables

  def train_inputs(self, model, config, variables, images, labels):
    """The stage-1 codes of the training set, encoded once: stage 1 is frozen, so they are the
    same at every step (and again on resume)."""
    return train_lib.make_applier(model, "encode", config.train.eval_batch_size)(
        variables, images, labels)

  def step(self, model, tx, config):
    update = train_lib.make_train_step(model, tx, method="code_losses")

    whitening, grid = code_whitening(config, model.code_shape), model.code_shape

    def code_stats(state, codes):
      return {"mean": code_mean(codes, whitening, grid),
              "scale_tril": code_scale(codes, whitening, grid)}

    def step(state, codes, y):
      stats = jax.lax.cond(state.step == 0, code_stats,
                           lambda s, _: s.model_state["code_stats"], state, codes)
      state = state.replace(model_state={**state.model_state, "code_stats": stats})
      state, metrics = update(state, codes, y)
      if config.model.ema_decay:
        for name in velocity_networks(config):
          state = train_lib.update_average(state, name, config.model.ema_decay)
      return state, metrics

    return step


def velocity_networks(config) -> tuple[str, ...]:
  """The submodules the step trains and, with config.model.ema_decay, averages for sampling: the
  prior's velocity field, and its autoguidance guide when there is one."""
  return ("velocity", "guide") if config.model.guide_width else ("velocity",)


def code_whitening(config, code_shape: tuple) -> str:
  """config.model.code_whitening with 'auto' resolved: one scale ('global') for grid codes, whose
  nearly unused channels then stay small, per dimension ('diagonal') for flat ones. (A diagonal
  scale is applied the same way whichever fitted it: runs that fitted theirs per channel read
  their stored statistics unchanged.)"""
  whitening = config.model.code_whitening
  if whitening == "auto":
    return "global" if code_shape else "diagonal"
  return whitening


def code_mean(codes, whitening: str, code_shape: tuple = ()):
  """(d,) mean of the codes (N, d): per channel of a grid ('channel', and 'global' over grid
  codes), else per dimension."""
  if not code_shape or whitening not in ("channel", "global"):
    return codes.mean(0)
  channels = codes.reshape(-1, code_shape[-1])
  return jnp.tile(channels.mean(0), codes.shape[1] // code_shape[-1])


def code_scale(codes, whitening: str, code_shape: tuple = ()):
  """Lower-triangular L with codes ~ mean + L z, z white: the Cholesky factor of the codes'
  covariance ('full'), the diagonal of their standard deviations ('diagonal'), or of their
  standard deviation per grid channel over all positions ('channel', code_shape (h, w, C)), or
  one standard deviation for every dimension ('global', latent diffusion's single scale factor:
  the dimensions keep their relative scales, so a nearly unused channel stays small and weighs
  little in the loss)."""
  if whitening == "global":
    spread = jnp.sqrt(jnp.mean((codes - code_mean(codes, whitening, code_shape)) ** 2))
    return spread * jnp.eye(codes.shape[1], dtype=codes.dtype)
  if whitening == "channel":
    channels = codes.reshape(-1, code_shape[-1])
    variance = jnp.var(channels, axis=0)
    variance = variance + 1e-6 * variance.mean()  # a collapsed channel stays invertible
    return jnp.diag(jnp.tile(jnp.sqrt(variance), codes.shape[1] // code_shape[-1]))
  centred = codes - codes.mean(0)
  cov = centred.T @ centred / codes.shape[0]
  # Jitter relative to the average variance: collapsed dimensions stay positive definite.
  cov = cov + 1e-6 * jnp.trace(cov) / cov.shape[0] * jnp.eye(cov.shape[0])
  if whitening == "full":
    return jnp.linalg.cholesky(cov)
  return jnp.diag(jnp.sqrt(jnp.diag(cov)))


def code_grid(stage1_model) -> tuple:
  """(h, w, C) of a stage 1 whose codes are a grid (its `code_shape`), else ()."""
  return tuple(getattr(stage1_model, "code_shape", ()))


def code_dim(stage1) -> int:
  """The width of stage 1's codes, from the shape of `encode` (no computation)."""
  shape = data.info(stage1.config.data.dataset).image_shape
  codes = jax.eval_shape(
      lambda v: stage1.model.apply(v, jnp.zeros((1, *shape)), jnp.zeros((1,), jnp.int32),
                                   method="encode"), stage1.variables)
  return codes.shape[-1]


def build(config, stage1):
  fields, sampling = config.model, config.sampling
  grid = code_grid(stage1.model)
  network = fields.prior_network
  if network == "unet" and not grid:
    raise UserError("--prior_network=unet needs grid codes (a stage 1 such as spatial_vae); "
                    "this stage 1's codes are flat: pass --prior_network=mlp (or auto)")
  return LatentFlow(
      stage1.model, code_dim(stage1), data.info(config.data.dataset).num_classes,
      conditional=bool(fields.conditional or stage1.model.conditional), width=fields.prior_width,
      layers=fields.prior_layers, code_shape=grid,
      grid_velocity=network == "unet" or (network == "auto" and bool(grid)),
      channels=tuple(fields.prior_channels),
      attention=fields.prior_attention, time_sampling=fields.time_sampling,
      code_whitening=code_whitening(config, grid),
      label_dropout=fields.label_dropout, guide_width=fields.guide_width,
      guide_layers=fields.guide_layers, solver=sampling.solver, sample_steps=sampling.sample_steps,
      guidance=sampling.guidance, autoguidance=sampling.autoguidance,
      conv_choice=cpu_compiler.conv_choice(config))


register(Family("latent_flow", build, FlowPriorTraining(), loss_name="velocity_mse",
                stage1_families=("conv_vae", "vae", "ae", "cond_vae", "spatial_vae"),
                description="flow-matching prior over a trained encoder family's codes"))
