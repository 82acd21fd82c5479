"""jax.export of a run's sampler: (key uint32[2], labels int32[n]) -> images, n symbolic.

Loaded elsewhere with jax alone: `jax.export.deserialize(blob).call(key, labels)`.
"""
import jax
import jax.numpy as jnp
from jax import export


def export_sampler(model, variables, platforms):
  """jax.export.Exported of (key uint32[2], labels int32[n]) -> images, n symbolic."""
  def sampler(key, labels):
    return model.apply(variables, labels, method="sample", rngs={"sample": key})

  n, = export.symbolic_shape("n")
  return export.export(jax.jit(sampler), platforms=tuple(platforms))(
      jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((n,), jnp.int32))
