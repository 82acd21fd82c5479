"""Importance-weighted bound on -log p(x) (Burda et al. 2016) for families with a tractable q(z|x)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp


def iwae_nll(model, variables, images, labels, key, num_samples: int = 50,
             batch_size: int = 100) -> float:
  """Mean over images of -log (1/K sum_k w_k), nats per image: an upper bound on -log p(x) that
  tightens as K grows (K=1 is the one-sample negative ELBO)."""

  @functools.partial(jax.jit, static_argnames="k")
  def bound(x, y, key, k):
    log_w = model.apply(variables, x.astype(jnp.float32) / 255.0, y, k,
                        method="log_importance_weights", rngs={"sample": key})
    return -(logsumexp(log_w, axis=1) - jnp.log(k))

  values = []
  for i, start in enumerate(range(0, len(images), batch_size)):
    values.append(bound(images[start:start + batch_size], labels[start:start + batch_size],
                        jax.random.fold_in(key, i), num_samples))
  return float(np.concatenate([np.asarray(v) for v in values]).mean())
