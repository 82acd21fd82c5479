"""`vqvae_prior` / `vqvae_cond_prior`: an autoregressive prior over a trained VQ-VAE's 7x7 codes.

A small causal transformer predicts code t from codes < t (raster order) and a start token (the
digit, for the conditional prior). The stage-1 VQ-VAE run (--stage1_workdir), loaded by
the caller, is put into this model's `vq` variables and stays frozen: its codes are integers, so no gradient reaches it. Sampling
is token by token with a key/value cache, then the VQ-VAE decodes the codes.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mnistgen_jax import cpu_compiler, data
from mnistgen_jax.models import vqvae as vqvae_lib
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import ConvChoice
from mnistgen_jax.models.registry import register


class Block(nn.Module):
  """Pre-LayerNorm transformer block; `__call__` for whole sequences, `step` for one token."""
  width: int
  heads: int

  def setup(self):
    self.ln1, self.ln2 = nn.LayerNorm(), nn.LayerNorm()
    self.qkv = nn.Dense(3 * self.width)
    self.proj = nn.Dense(self.width)
    self.fc1, self.fc2 = nn.Dense(4 * self.width), nn.Dense(self.width)

  def _qkv(self, h):
    q, k, v = jnp.split(self.qkv(self.ln1(h)), 3, axis=-1)
    split = lambda t: t.reshape(t.shape[:-1] + (self.heads, self.width // self.heads))
    return split(q), split(k), split(v)

  def _attend_and_mlp(self, h, q, k, v, mask):
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    probs = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1)
    attended = jnp.einsum("bhts,bshd->bthd", probs, v).reshape(h.shape)
    h = h + self.proj(attended)
    return h + self.fc2(nn.gelu(self.fc1(self.ln2(h))))

  def __call__(self, h):
    q, k, v = self._qkv(h)
    causal = jnp.tril(jnp.ones((h.shape[1], h.shape[1]), bool))
    return self._attend_and_mlp(h, q, k, v, causal)

  def step(self, h, cache, position: int):
    """h: (B, 1, width) at `position`; cache: (keys, values), each (B, length, heads, dim)."""
    q, k, v = self._qkv(h)
    keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k, position, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache[1], v, position, axis=1)
    visible = (jnp.arange(keys.shape[1]) <= position)[None, :]
    return self._attend_and_mlp(h, q, keys, values, visible), (keys, values)


class VQPrior(nn.Module):
  vq: vqvae_lib.VQVAE
  num_classes: int
  conditional: bool = False
  width: int = 128
  layers: int = 2
  heads: int = 4
  temperature: float = 1.0
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  latent_interpolation = "lerp"  # the VQ-VAE's continuous codes

  @property
  def length(self) -> int:
    return self.vq.grid[0] * self.vq.grid[1]

  def setup(self):
    num_codes = self.vq.num_codes
    starts = self.num_classes if self.conditional else 1  # one start token per digit
    self.embed = nn.Embed(num_codes + starts, self.width)
    self.position = self.param("position", nn.initializers.normal(0.02),
                               (self.length, self.width))
    self.blocks = [Block(self.width, self.heads) for _ in range(self.layers)]
    self.ln = nn.LayerNorm()
    self.logits = nn.Dense(num_codes)

  def _start(self, y):
    return self.vq.num_codes + (y if self.conditional else jnp.zeros_like(y))

  def code_logits(self, codes, y):
    """Teacher-forced logits (B, 49, K) of each code given the ones before it."""
    inputs = jnp.concatenate([self._start(y)[:, None], codes[:, :-1]], axis=1)
    h = self.embed(inputs) + self.position
    for block in self.blocks:
      h = block(h)
    return self.logits(self.ln(h))

  def losses(self, x, y, train: bool = False):
    codes = self.vq.encode_indices(x).reshape(x.shape[0], self.length)
    if self.is_initializing():  # Create the decoder's variables too (they come from stage 1).
      self.vq.decode_indices(codes.reshape(-1, *self.vq.grid))
    nll = optax.softmax_cross_entropy_with_integer_labels(self.code_logits(codes, y), codes).sum(1)
    return {"loss": nll, "bits_per_code": nll / (self.length * math.log(2))}

  def sample_codes(self, y):
    batch, dim = y.shape[0], self.width // self.heads
    key = self.make_rng("sample")
    caches = [(jnp.zeros((batch, self.length, self.heads, dim)),) * 2 for _ in self.blocks]
    token, codes = self._start(y), []
    for t in range(self.length):  # Unrolled: 49 small steps, each attending over the cache.
      h = self.embed(token)[:, None] + self.position[t]
      for i, block in enumerate(self.blocks):
        h, caches[i] = block.step(h, caches[i], t)
      logits = self.logits(self.ln(h))[:, 0] / self.temperature
      token = jax.random.categorical(jax.random.fold_in(key, t), logits)
      codes.append(token)
    return jnp.stack(codes, axis=1).reshape(batch, *self.vq.grid)

  def sample(self, y):
    return self.vq.decode_indices(self.sample_codes(y))

  def reconstruct(self, x, y):
    return self.vq.reconstruct(x, y)

  def encode(self, x, y):
    return self.vq.encode(x, y)

  def decode(self, z, y):
    return self.vq.decode(z, y)


class PriorTraining(Training):
  """Shared training; the stage-1 VQ-VAE's variables (every collection) go into `vq`."""

  def init_variables(self, config, variables, stage1):
    del config
    return stage1.insert_into(variables, "vq")


def _builder(conditional: bool):
  def build(config, stage1):
    fields = config.model
    return VQPrior(stage1.model, data.info(config.data.dataset).num_classes, conditional,
                   width=fields.prior_width, layers=fields.prior_layers, heads=fields.prior_heads,
                   temperature=config.sampling.temperature,
                   conv_choice=cpu_compiler.conv_choice(config))
  return build


for _name, _conditional in (("vqvae_prior", False), ("vqvae_cond_prior", True)):
  register(Family(_name, _builder(_conditional), PriorTraining(), loss_name="code_nll",
                  stage1_families=("vqvae",),
                  description="autoregressive transformer prior over VQ-VAE codes"))
