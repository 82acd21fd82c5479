"""`vqvae`: VQ-VAE (van den Oord et al. 2017) on a 7x7 grid of codes, with our own quantizer.

loss = -log p(x | z_q(x)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (codebook_mode='gradient'),
or the reconstruction and commitment terms with an EMA codebook (codebook_mode='ema', default),
whose long-unused codes are restarted from encoder outputs (restart_after > 0).
On its own it samples i.i.d. codes from their training-set frequencies: a weak
prior; `vqvae_prior` (vqvae_prior.py) learns an autoregressive one.
The code frequencies are refitted before every checkpoint (CodebookTraining).
"""
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax import cpu_compiler, data, quantizer
from mnistgen_jax import train as train_lib
from mnistgen_jax.models.interface import Family, Training
from mnistgen_jax.models.nets import Conv, ConvChoice, Upsample, bernoulli_nll
from mnistgen_jax.models.registry import register


class VQVAE(nn.Module):
  num_codes: int
  code_dim: int
  channels: Sequence[int]
  image_shape: Sequence[int]
  beta: float = 0.25
  codebook_mode: str = "ema"   # ema | gradient
  ema_decay: float = 0.99
  conv_choice: ConvChoice = ConvChoice()  # speed only (nets.ConvChoice; set by build)
  restart_after: int = 100     # EMA mode: steps unused before a code is restarted (0: never)
  conditional = False
  latent_interpolation = "lerp"  # continuous codes before quantization

  @property
  def grid(self) -> tuple[int, int]:
    """The code grid: the image side halved once per stride-2 conv (28 -> 7 with two)."""
    return tuple(s // 2 ** len(self.channels) for s in self.image_shape[:2])

  def setup(self):
    self.down = [Conv(c, 4, stride=2) for c in self.channels]
    self.to_code = Conv(self.code_dim, 1)
    self.from_code = Conv(self.channels[-1], 3)
    self.up = ([Upsample(c) for c in reversed(self.channels[:-1])]
               + [Upsample(self.image_shape[-1])])
    init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    shape = (self.num_codes, self.code_dim)
    if self.codebook_mode == "gradient":
      self.codebook_param = self.param("codebook", init, shape)
    else:
      initial = self.variable("vq", "codebook", lambda: init(self.make_rng("params"), shape))
      self.ema_codebook = initial
      self.cluster_size = self.variable("vq", "cluster_size", jnp.ones, (self.num_codes,))
      self.embed_sum = self.variable("vq", "embed_sum", lambda: jnp.array(initial.value, copy=True))
      self.unused_steps = self.variable("vq", "unused_steps", jnp.zeros, (self.num_codes,),
                                        jnp.int32)
    # i.i.d. code frequencies for sampling without a learned prior (set by fit_prior).
    self.code_logits = self.variable("prior", "code_logits", jnp.zeros, (self.num_codes,))

  def codebook(self):
    return self.codebook_param if self.codebook_mode == "gradient" else self.ema_codebook.value

  def encode_continuous(self, x):
    h = x
    for conv in self.down:
      h = nn.relu(conv(h))
    return self.to_code(h)  # z_e: (B, 7, 7, D)

  def decode_logits(self, z_q):
    h = nn.relu(self.from_code(z_q))
    for i, up in enumerate(self.up):
      h = up(h)
      h = nn.relu(h) if i < len(self.up) - 1 else h
    return h

  def losses(self, x, y, train: bool = False):
    z_e = self.encode_continuous(x)
    q = quantizer.quantize(z_e, self.codebook())
    recon = bernoulli_nll(self.decode_logits(q.quantized), x)
    out = {"recon": recon, "commitment": q.commitment_loss}
    if self.codebook_mode == "gradient":
      out["codebook"] = q.codebook_loss
      out["loss"] = recon + q.codebook_loss + self.beta * q.commitment_loss
    else:
      out["loss"] = recon + self.beta * q.commitment_loss
      if train and not self.is_initializing():
        self._update_ema(z_e, q)
    batch = jnp.ones_like(recon)  # Batch-level statistics, logged beside the per-example terms.
    out.update(perplexity=q.perplexity * batch, codes_used=q.usage * batch)
    return out

  def _update_ema(self, z_e, q):
    state = quantizer.ema_update(
        quantizer.EMAState(self.cluster_size.value, self.embed_sum.value, self.ema_codebook.value),
        z_e, q.indices, self.ema_decay)
    unused = jnp.where(q.counts > 0, 0, self.unused_steps.value + 1)
    if self.restart_after:
      state, unused = quantizer.restart_dead_codes(self.make_rng("sample"), state, unused, z_e,
                                                   self.restart_after)
    self.cluster_size.value, self.embed_sum.value, self.ema_codebook.value = state
    self.unused_steps.value = unused

  def encode(self, x, y):
    """Continuous codes before quantization, flattened: (B, grid * grid * D)."""
    z_e = self.encode_continuous(x)
    return z_e.reshape(z_e.shape[0], -1)

  def encode_indices(self, x, y=None):
    return quantizer.quantize(self.encode_continuous(x), self.codebook()).indices

  def decode_indices(self, indices):
    return nn.sigmoid(self.decode_logits(self.codebook()[indices]))

  def decode(self, z, y):
    """Flat continuous codes (from `encode`, or a path between two) -> quantized -> images."""
    z_e = z.reshape(z.shape[0], *self.grid, self.code_dim)
    return nn.sigmoid(self.decode_logits(quantizer.quantize(z_e, self.codebook()).quantized))

  def reconstruct(self, x, y):
    return self.decode(self.encode(x, y), y)

  def sample(self, y):
    indices = jax.random.categorical(self.make_rng("sample"), self.code_logits.value,
                                     shape=(y.shape[0], *self.grid))
    return self.decode_indices(indices)


def codebook_of(variables) -> np.ndarray:
  if "vq" in variables:
    return np.asarray(variables["vq"]["codebook"])
  return np.asarray(variables["params"]["codebook"])


def fit_code_frequencies(variables, codes: np.ndarray):
  """The 'prior' of a lone VQ-VAE: log frequencies of the training set's codes (i.i.d.)."""
  codebook = codebook_of(variables)
  indices = np.asarray(quantizer.nearest_codes(jnp.asarray(codes.reshape(-1, codebook.shape[1])),
                                               jnp.asarray(codebook)))
  counts = np.bincount(indices, minlength=codebook.shape[0]) + 1e-3
  return {**variables, "prior": {"code_logits": jnp.asarray(np.log(counts / counts.sum()),
                                                           jnp.float32)}}


class CodebookTraining(Training):
  """Shared training; before each checkpoint the codes' training-set frequencies become the
  sampling prior; after training, codebook_usage.png and the test set's code statistics."""

  def fit_prior(self, model, config):
    encode = train_lib.make_applier(model, "encode", config.train.eval_batch_size)
    return lambda variables, images, labels: fit_code_frequencies(
        variables, np.asarray(encode(variables, images, labels)))

  def report(self, model, variables, images, labels, workdir) -> dict:
    from mnistgen_jax import viz  # Report-time only.
    indices = train_lib.make_applier(model, "encode_indices", 1000)(variables, images, labels)
    counts = np.bincount(np.asarray(indices).reshape(-1), minlength=model.num_codes)
    perplexity = float(quantizer.perplexity_of(jnp.asarray(counts, jnp.float32)))
    used = int((counts > 0).sum())
    viz.save_code_usage(os.path.join(workdir, "codebook_usage.png"), counts,
                        f"codebook usage on the test set: {used}/{model.num_codes} codes, "
                        f"perplexity {perplexity:.1f}")
    return {"test_set_perplexity": perplexity, "test_set_codes_used": used}


def build(config, stage1=None):
  del stage1
  return VQVAE(num_codes=config.model.num_codes,
               code_dim=config.model.code_dim,
               channels=tuple(config.model.channels),
               image_shape=data.info(config.data.dataset).image_shape,
               beta=config.model.commitment_cost,
               codebook_mode=config.model.codebook_mode,
               ema_decay=config.model.ema_decay,
               restart_after=config.model.restart_after,
               conv_choice=cpu_compiler.conv_choice(config))


register(Family("vqvae", build, CodebookTraining(), loss_name="loss",
                description="VQ-VAE, 7x7 codes, EMA or gradient codebook"))
