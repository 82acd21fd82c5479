"""Likelihoods: the importance-weighted bound on -log p(x) (Burda et al. 2016) for families with a
tractable q(z|x), and bits/dim of continuous-density models (flows) on dequantized pixels."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from mnistgen_jax.progress import progress as show_progress


# Decodes per pass of the model's decoder in the bound (samples_per_pass x batch_size) on CPU:
# about 1,000 keep the working set in cache (nets.map_over_samples). Accelerators decode all at
# once (no cache to fit; smaller passes would only leave them idle). The draws do not depend on it.
DECODES_PER_PASS = 1000


def default_decodes_per_pass() -> int:
  return DECODES_PER_PASS if jax.default_backend() == "cpu" else 0


def iwae_nll(model, variables, images, labels, key, num_samples: int = 50,
             batch_size: int = 100, samples_per_call: int = 500, progress: bool = False,
             decodes_per_pass: int | None = None, compiler_options: dict | None = None) -> float:
  """Mean over images of iwae_nll_per_image (same arguments): nats per image."""
  return float(iwae_nll_per_image(model, variables, images, labels, key, num_samples,
                                  batch_size, samples_per_call, progress, decodes_per_pass,
                                  compiler_options).mean())


def iwae_nll_per_image(model, variables, images, labels, key, num_samples: int = 50,
                       batch_size: int = 100, samples_per_call: int = 500,
                       progress: bool = False, decodes_per_pass: int | None = None,
                       compiler_options: dict | None = None) -> np.ndarray:
  """-log (1/K sum_k w_k) of each image, nats: an upper bound on -log p(x) that tightens as K
  grows (K=1 is the one-sample negative ELBO).

  The K importance samples of a batch are drawn samples_per_call at a time inside one jitted scan
  that carries a running logsumexp, so K = 5000 (the IWAE paper's test estimate) needs the memory
  of samples_per_call, not of K. K <= samples_per_call is one chunk (the same draws as before).
  Within a chunk the model decodes about decodes_per_pass codes at a time (0: all at once; None:
  default_decodes_per_pass()): the same draws and values up to float rounding, faster on CPU.
  compiler_options: jax.jit's, e.g. cpu_compiler.of_config(config) (speed only)."""
  chunk = min(num_samples, samples_per_call)
  num_chunks = -(-num_samples // chunk)
  if decodes_per_pass is None:
    decodes_per_pass = default_decodes_per_pass()
  samples_per_pass = max(1, decodes_per_pass // batch_size) if decodes_per_pass > 0 else 0

  @functools.partial(jax.jit, compiler_options=compiler_options)
  def bound(x, y, key):
    x = x.astype(jnp.float32) / 255.0

    def add_chunk(total, i):
      log_w = model.apply(variables, x, y, chunk, samples_per_pass,
                          method="log_importance_weights",
                          rngs={"sample": jax.random.fold_in(key, i) if num_chunks > 1 else key})
      # The last chunk may hold more samples than K needs: those get weight zero.
      keep = i * chunk + jnp.arange(chunk) < num_samples
      log_w = jnp.where(keep[None, :], log_w, -jnp.inf)
      return jnp.logaddexp(total, logsumexp(log_w, axis=1)), None

    total, _ = jax.lax.scan(add_chunk, jnp.full((x.shape[0],), -jnp.inf), jnp.arange(num_chunks))
    return -(total - jnp.log(num_samples))

  values = []
  starts = range(0, len(images), batch_size)
  for i, start in enumerate(show_progress(starts, desc=f"IWAE bound, K={num_samples}",
                                          unit="batch", disable=not progress)):
    values.append(np.asarray(bound(images[start:start + batch_size],
                                   labels[start:start + batch_size], jax.random.fold_in(key, i))))
  return np.concatenate(values)


def dequantized_bits_per_dim(model, variables, images, labels, key, steps: int,
                             num_probes: int = 1, batch_size: int = 250):
  """(mean, standard error over images) of -log2 p(x) / D for uint8 images x under a model of
  continuous images in [0, 1] (method `log_density(u, y, steps, num_probes)`), by uniform
  dequantization: u = (x + U[0, 1)) / 256, -log P(x) <= -log p(u) + D log 256 (Theis et al. 2016;
  the bound the flow literature reports on MNIST, e.g. 1.02-1.08 bits/dim for normalizing flows)."""

  @jax.jit
  def bits(x, y, key):
    noise_key, probe_key = jax.random.split(key)
    u = (x.astype(jnp.float32) + jax.random.uniform(noise_key, x.shape)) / 256.0
    log_p = model.apply(variables, u, y, steps, num_probes, method="log_density",
                        rngs={"sample": probe_key})
    dims = math.prod(x.shape[1:])
    return (dims * math.log(256.0) - log_p) / (dims * math.log(2.0))

  values = []
  for i, start in enumerate(range(0, len(images), batch_size)):
    values.append(bits(images[start:start + batch_size], labels[start:start + batch_size],
                       jax.random.fold_in(key, i)))
  values = np.concatenate([np.asarray(v) for v in values])
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
