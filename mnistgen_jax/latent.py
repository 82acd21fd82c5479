"""Latent-space tools: interpolation between two images, and 2-D views of codes for plots."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def lerp(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Straight line from a to b: (T,) t -> (T, *a.shape)."""
  t = t.reshape((-1,) + (1,) * a.ndim)
  return (1 - t) * a + t * b


def slerp(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Great-circle interpolation (White 2016): under a N(0, I) prior the straight line's middle is
  atypically short; slerp keeps the norm near that of the endpoints. Falls back to lerp when a
  and b are (anti)parallel."""
  a_flat, b_flat = a.reshape(-1), b.reshape(-1)
  cos = jnp.dot(a_flat, b_flat) / (jnp.linalg.norm(a_flat) * jnp.linalg.norm(b_flat) + 1e-12)
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  sin = jnp.sin(omega)
  t_col = t.reshape((-1,) + (1,) * a.ndim)
  safe = jnp.where(sin > 1e-6, sin, 1.0)
  curved = (jnp.sin((1 - t_col) * omega) * a + jnp.sin(t_col * omega) * b) / safe
  return jnp.where(sin > 1e-6, curved, lerp(a, b, t))


def interpolate(model, variables, x_pair, y_pair, steps: int, mode: str, conditional: bool):
  """Images decoded along the path between the codes of x_pair[0] and x_pair[1]; (rows, steps+2)
  images in a flat array, each row [x0, path..., x1]. Conditional models get one row per
  endpoint label (the path is style; the label is the digit drawn)."""
  codes = model.apply(variables, x_pair, y_pair, method="encode")
  path = (slerp if mode == "slerp" else lerp)(codes[0], codes[1], jnp.linspace(0.0, 1.0, steps))
  labels = np.asarray(y_pair) if conditional else np.asarray(y_pair[:1])
  rows = []
  for label in labels:
    decoded = model.apply(variables, path, jnp.full((steps,), label, jnp.int32), method="decode")
    rows.append(jnp.concatenate([x_pair[:1], decoded, x_pair[1:]]))
  return jnp.concatenate(rows)


def project_2d(codes) -> tuple[np.ndarray, tuple[str, str]]:
  """2-D view of (N, d) codes and its axis labels: the codes themselves when d <= 2, else their
  first two principal components (PCA: SVD of the centred codes) with the variance each explains."""
  codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
  if codes.shape[1] <= 2:
    return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1]))), ("z[0]", "z[1]")
  centred = codes - codes.mean(0)
  _, singular, vt = np.linalg.svd(centred, full_matrices=False)
  share = 100 * singular[:2] ** 2 / (singular**2).sum()
  return centred @ vt[:2].T, (f"PC1 ({share[0]:.0f} % of variance)",
                              f"PC2 ({share[1]:.0f} % of variance)")
