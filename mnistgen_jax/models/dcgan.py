"""`dcgan`: DCGAN (Radford et al. 2015) for 28x28 digits, optionally class-conditional.

Generator: [a dense hidden layer,] dense to 7x7xC1, two sub-pixel 2x upsamplings with BatchNorm and
ReLU, sigmoid image. Discriminator: stride-2 convolutions with LeakyReLU(0.2)[, a dense hidden
layer], a dense logit; with a hidden width this is the InfoGAN MNIST architecture (Chen et al.
2016) that Lucic et al. 2018 tuned. N(0, 0.02) weights,
non-saturating BCE, Adam(beta1=0.5) per network (its own learning rate for D: TTUR), optional
one-sided label smoothing and R1 penalty on real images. One step updates D, then G against the
updated D; BatchNorm statistics and an EMA of G's weights (used for sampling) with BatchNorm
statistics of its own are variables.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mnistgen_jax import cpu_compiler, data
from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import Conv, ConvChoice, Upsample, with_label
from mnistgen_jax.models.registry import register

INIT = nn.initializers.normal(0.02)


class Generator(nn.Module):
  latent_dim: int
  conditional: bool
  channels: Sequence[int]     # at a quarter of the image side (7x7), then at half (14x14)
  image_shape: Sequence[int]
  num_classes: int
  hidden: int = 0             # a dense layer of this width before the 7x7 projection (0: none)

  @nn.compact
  def __call__(self, z, y, train: bool):
    h = with_label(z, y if self.conditional else None, self.num_classes)
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    top, mid = self.channels
    height, width = (s // 4 for s in self.image_shape[:2])
    if self.hidden:
      h = nn.relu(norm()(nn.Dense(self.hidden, kernel_init=INIT)(h)))
    h = nn.relu(norm()(nn.Dense(height * width * top, kernel_init=INIT)(h)))
    h = h.reshape(-1, height, width, top)
    h = nn.relu(norm()(Upsample(mid, kernel_init=INIT)(h)))              # half size
    return nn.sigmoid(Upsample(self.image_shape[-1], kernel_init=INIT)(h))  # full, in [0, 1]


class Discriminator(nn.Module):
  conditional: bool
  channels: Sequence[int]  # at half the image side (14x14), then at a quarter (7x7)
  num_classes: int
  hidden: int = 0          # a dense layer of this width before the logit (0: none)

  @nn.compact
  def __call__(self, x, y):
    if self.conditional:  # The label as num_classes constant planes beside the image.
      planes = nn.one_hot(y, self.num_classes)[:, None, None, :]
      x = jnp.concatenate([x, jnp.broadcast_to(planes, x.shape[:3] + (self.num_classes,))], -1)
    for width in self.channels:  # 14x14, then 7x7
      x = nn.leaky_relu(Conv(width, 4, stride=2, kernel_init=INIT)(x), 0.2)
    x = x.reshape(x.shape[0], -1)
    if self.hidden:
      x = nn.leaky_relu(nn.Dense(self.hidden, kernel_init=INIT)(x), 0.2)
    return nn.Dense(1, kernel_init=INIT)(x)[:, 0]


def bce_with_logits(logits, target: float):
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target))


class DCGAN(nn.Module):
  """channels: the discriminator's widths (14x14, 7x7); generator_channels: G's (7x7, 14x14)."""
  latent_dim: int
  conditional: bool
  channels: Sequence[int]
  image_shape: Sequence[int]
  num_classes: int

  generator_channels: Sequence[int]  # G's widths at 7x7, then at 14x14
  hidden: int = 0                    # the dense hidden layer's width in G and in D (0: none)
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)

  def setup(self):
    self.generator = Generator(self.latent_dim, self.conditional, tuple(self.generator_channels),
                               self.image_shape, self.num_classes, self.hidden)
    self.discriminator = Discriminator(self.conditional, tuple(self.channels), self.num_classes,
                                       self.hidden)

  def generate(self, z, y, train: bool = False):
    return self.generator(z, y, train)

  def discriminate(self, x, y):
    return self.discriminator(x, y)

  def losses(self, x, y, train: bool = False):
    """Per-example losses of both players on real x and fresh fakes (evaluation; init)."""
    z = jax.random.normal(self.make_rng("sample"), (x.shape[0], self.latent_dim))
    fake = self.generator(z, y, train)
    real_logits, fake_logits = self.discriminator(x, y), self.discriminator(fake, y)
    d_loss = bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)
    g_loss = bce_with_logits(fake_logits, 1.0)
    return {"loss": g_loss, "d_loss": d_loss, "g_loss": g_loss,
            "d_real": nn.sigmoid(real_logits), "d_fake": nn.sigmoid(fake_logits)}

  def sample(self, y):
    """Samples from the EMA generator when there is one (as trained), else the live one. The EMA
    weights use their own BatchNorm statistics where tracked (--gan_ema_batch_stats), else the
    live generator's, which belong to other weights."""
    z = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim))
    if self.has_variable("ema", "generator"):
      stats = (self.get_variable("ema", "batch_stats") if self.has_variable("ema", "batch_stats")
               else self.get_variable("batch_stats", "generator"))
      variables = {"params": self.get_variable("ema", "generator"), "batch_stats": stats}
      return self.generator.clone(parent=None).apply(variables, z, y, False)
    return self.generator(z, y, False)


class PerNetworkAdam(NamedTuple):
  """One Adam per network, so the D update never touches G's moments and vice versa; each has its
  own learning rate (TTUR, Heusel et al. 2017)."""
  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation

  def init(self, params):
    return {name: getattr(self, name).init(p) for name, p in params.items()}


def r1_penalty(discriminate, x, y):
  """Per-example ||grad_x D(x)||^2 on real images (Mescheder et al. 2018); differentiated again
  by D's update."""
  grads = jax.grad(lambda images: discriminate(images, y).sum())(x)
  return jnp.sum(jnp.square(grads).reshape(x.shape[0], -1), axis=-1)


def make_train_step(model, tx: PerNetworkAdam, config):
  ema_decay = config.model.gan_ema_decay
  real_target = 1.0 - config.model.gan_label_smoothing  # One-sided: fakes keep target 0.
  r1_gamma = config.model.gan_r1_gamma

  def apply(params, state, method, *args, mutable=False):
    return model.apply({"params": params, **state.model_state}, *args, method=method,
                       mutable=mutable)

  def update(name, grads, opt_state, params):
    updates, new_state = getattr(tx, name).update(grads, opt_state[name], params[name])
    return ({**params, name: optax.apply_updates(params[name], updates)},
            {**opt_state, name: new_state})

  def step(state, x, y):
    key = jax.random.fold_in(state.rng, state.step)
    z = jax.random.normal(key, (x.shape[0], model.latent_dim))
    params, opt_state = state.params, state.opt_state
    fake, _ = apply(params, state, "generate", z, y, True, mutable=["batch_stats"])
    fake = jax.lax.stop_gradient(fake)

    def d_loss(d_params):
      p = {**params, "discriminator": d_params}
      discriminate = lambda images, labels: apply(p, state, "discriminate", images, labels)
      real_logits, fake_logits = discriminate(x, y), discriminate(fake, y)
      loss = bce_with_logits(real_logits, real_target) + bce_with_logits(fake_logits, 0.0)
      if r1_gamma:
        loss = loss + 0.5 * r1_gamma * r1_penalty(discriminate, x, y)
      return loss.mean(), (nn.sigmoid(real_logits).mean(), nn.sigmoid(fake_logits).mean())

    (d_value, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        params["discriminator"])
    params, opt_state = update("discriminator", d_grads, opt_state, params)

    def g_loss(g_params):  # Non-saturating: -log D(G(z)), against the updated D.
      p = {**params, "generator": g_params}
      images, new_stats = apply(p, state, "generate", z, y, True, mutable=["batch_stats"])
      return bce_with_logits(apply(p, state, "discriminate", images, y), 1.0).mean(), new_stats

    (g_value, new_stats), g_grads = jax.value_and_grad(g_loss, has_aux=True)(params["generator"])
    params, opt_state = update("generator", g_grads, opt_state, params)
    model_state = dict(state.model_state, batch_stats=new_stats["batch_stats"])
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                          model_state=model_state)
    if "ema" in model_state:
      state = train_lib.update_average(state, "generator", ema_decay)  # with warm-up
      ema = state.model_state["ema"]
      if "batch_stats" in ema:  # The EMA weights' own BatchNorm statistics, on the same noise.
        ema_variables = {"params": {**params, "generator": ema["generator"]},
                         "batch_stats": {"generator": ema["batch_stats"]}}
        _, ema_stats = model.apply(ema_variables, z, y, True, method="generate",
                                   mutable=["batch_stats"])
        state = state.replace(model_state={**state.model_state, "ema": {
            **ema, "batch_stats": ema_stats["batch_stats"]["generator"]}})
    metrics = {"loss": g_value, "d_loss": d_value, "g_loss": g_value, "d_real": d_real,
               "d_fake": d_fake, "d_grad_norm": optax.global_norm(d_grads),
               "g_grad_norm": optax.global_norm(g_grads)}
    return state, metrics

  return step


class AlternatingTraining(Training):
  """Per-network Adam(beta1=0.5): G at learning_rate, D at gan_d_learning_rate (0: the same); each
  step updates D, then G against the updated D; an EMA of G's weights
  (config.model.gan_ema_decay > 0), with BatchNorm statistics of its own (gan_ema_batch_stats),
  for sampling; per-epoch snapshots."""
  epoch_snapshots = True

  def optimizer(self, config, total_steps: int):
    rates = self.learning_rates(config, total_steps)
    return PerNetworkAdam(generator=optax.adam(rates["learning_rate/generator"], b1=0.5),
                          discriminator=optax.adam(rates["learning_rate/discriminator"], b1=0.5))

  def learning_rates(self, config, total_steps: int) -> dict:
    del total_steps
    return {"learning_rate/generator": config.train.learning_rate,
            "learning_rate/discriminator": (config.model.gan_d_learning_rate
                                            or config.train.learning_rate)}

  def init_variables(self, config, variables, stage1):
    """The EMA of the generator starts at its initial weights (and their statistics)."""
    del stage1
    if not config.model.gan_ema_decay:
      return variables
    ema = {"generator": jax.tree.map(jnp.copy, variables["params"]["generator"])}
    if config.model.gan_ema_batch_stats:
      ema["batch_stats"] = jax.tree.map(jnp.copy, variables["batch_stats"]["generator"])
    return {**variables, "ema": ema}

  def step(self, model, tx, config):
    return make_train_step(model, tx, config)


def _builder(conditional: bool):
  def build(config, stage1=None):
    del stage1
    info = data.info(config.data.dataset)
    fields = config.model
    return DCGAN(fields.latent_dim, conditional, channels=tuple(fields.channels),
                 image_shape=info.image_shape, num_classes=info.num_classes,
                 generator_channels=tuple(fields.generator_channels), hidden=fields.gan_hidden,
                 conv_choice=cpu_compiler.conv_choice(config))
  return build


for _name, _conditional in (("dcgan", False), ("cond_dcgan", True)):
  register(Family(_name, _builder(_conditional), AlternatingTraining(), loss_name="g_loss",
                  description="DCGAN (Radford et al. 2015)"))
