"""The straight-through vector quantizer of VQ-VAE (van den Oord et al. 2017), written out.

`quantize` maps each encoder vector to its nearest codebook entry and returns the quantized tensor
with a straight-through gradient, the two stop-gradient losses and usage statistics.
`ema_update` is the codebook update of sonnet's VectorQuantizerEMA (decayed counts and sums,
Laplace-smoothed), and `restart_dead_codes` re-seeds long-unused codes from encoder outputs.
Every sum runs over the whole (global) batch, so under jit with a sharded batch the statistics
are global across devices.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


class Quantized(NamedTuple):
  quantized: jnp.ndarray        # z_e + sg(e - z_e): the value of e, the gradient of z_e
  indices: jnp.ndarray          # (...,) int32 nearest codes
  codebook_loss: jnp.ndarray    # per example: sum ||sg(z_e) - e||^2 (moves only the codebook)
  commitment_loss: jnp.ndarray  # per example: sum ||z_e - sg(e)||^2 (moves only the encoder)
  counts: jnp.ndarray           # (K,) assignments per code in this batch
  perplexity: jnp.ndarray       # exp(entropy of the batch's code distribution); K when uniform
  usage: jnp.ndarray            # fraction of codes used at least once in this batch


def nearest_codes(flat: jnp.ndarray, codebook: jnp.ndarray) -> jnp.ndarray:
  """Index of the nearest codebook row for each row of flat, by squared Euclidean distance."""
  distances = ((flat**2).sum(1, keepdims=True) - 2.0 * flat @ codebook.T
               + (codebook**2).sum(1)[None, :])
  return jnp.argmin(distances, axis=1).astype(jnp.int32)


def perplexity_of(counts: jnp.ndarray) -> jnp.ndarray:
  p = counts / jnp.maximum(counts.sum(), 1)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def quantize(z_e: jnp.ndarray, codebook: jnp.ndarray) -> Quantized:
  """z_e (B, ..., D), codebook (K, D)."""
  num_codes, dim = codebook.shape
  flat = z_e.reshape(-1, dim)
  indices = nearest_codes(flat, codebook)
  e = codebook[indices].reshape(z_e.shape)
  quantized = z_e + sg(e - z_e)  # Straight-through: forward e, backward identity to z_e.
  per_example = lambda t: t.reshape(t.shape[0], -1).sum(1)
  counts = jnp.zeros(num_codes, jnp.float32).at[indices].add(1.0)
  return Quantized(
      quantized=quantized, indices=indices.reshape(z_e.shape[:-1]),
      codebook_loss=per_example((sg(z_e) - e) ** 2),
      commitment_loss=per_example((z_e - sg(e)) ** 2),
      counts=counts, perplexity=perplexity_of(counts), usage=(counts > 0).mean())


class EMAState(NamedTuple):
  cluster_size: jnp.ndarray  # (K,) decayed assignment counts
  embed_sum: jnp.ndarray     # (K, D) decayed sums of assigned encoder vectors
  codebook: jnp.ndarray      # (K, D) embed_sum / smoothed cluster_size


def ema_update(state: EMAState, z_e: jnp.ndarray, indices: jnp.ndarray, decay: float,
               epsilon: float = 1e-5) -> EMAState:
  """One EMA step from a batch of encoder outputs and their assignments (sonnet's
  VectorQuantizerEMA): decayed counts and sums, counts Laplace-smoothed so no code divides by 0."""
  num_codes, dim = state.codebook.shape
  flat = sg(z_e).reshape(-1, dim)
  one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=flat.dtype)
  cluster_size = decay * state.cluster_size + (1 - decay) * one_hot.sum(0)
  embed_sum = decay * state.embed_sum + (1 - decay) * one_hot.T @ flat
  n = cluster_size.sum()
  smoothed = (cluster_size + epsilon) / (n + num_codes * epsilon) * n
  return EMAState(cluster_size, embed_sum, embed_sum / smoothed[:, None])


def restart_dead_codes(key, state: EMAState, unused_steps: jnp.ndarray, z_e: jnp.ndarray,
                       after: int):
  """Codes unused for `after` steps take a random encoder output of this batch (counts reset to
  1, so the EMA keeps them there). Returns (state, unused_steps) with restarted counters at 0."""
  dim = state.codebook.shape[1]
  flat = sg(z_e).reshape(-1, dim)
  dead = unused_steps >= after
  picks = flat[jax.random.randint(key, (state.codebook.shape[0],), 0, flat.shape[0])]
  codebook = jnp.where(dead[:, None], picks, state.codebook)
  cluster_size = jnp.where(dead, 1.0, state.cluster_size)
  embed_sum = jnp.where(dead[:, None], picks, state.embed_sum)
  return EMAState(cluster_size, embed_sum, codebook), jnp.where(dead, 0, unused_steps)
