"""Data parallelism over any number of devices with jax.sharding.

A 1-D mesh named 'data' over the devices; each batch is split along it and everything else (the
dataset, parameters, optimiser and model state) is replicated. jit partitions the step and inserts
the cross-device reductions itself, so batch means, BatchNorm statistics and VQ codebook counts
are over the global batch: the same computation as on one device, up to summation order.
Works unchanged across hosts (after jax.distributed.initialize): arrays are built from host data
with make_array_from_callback, each process supplying its own devices' parts.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """The first num_devices devices (0: all, across every host) as a 'data' mesh."""
  devices = jax.devices()
  if num_devices > len(devices):
    raise ValueError(f"--num_devices={num_devices} but only {len(devices)} "
                     f"{devices[0].platform.upper()} device(s) are visible; pass at most "
                     f"{len(devices)} (0 = all)")
  return Mesh(np.array(devices[:num_devices or len(devices)]), (AXIS,))


def check_batch(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(f"--batch_size={batch_size} does not split over {mesh.size} devices; pass a "
                     f"multiple of {mesh.size} (e.g. {mesh.size * max(1, batch_size // mesh.size)})"
                     " or --num_devices")


def batch_sharding(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
  """Splits dimension `axis` of an ndim-array over the devices."""
  spec = [None] * ndim
  spec[axis] = AXIS
  return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put(tree, sharding: NamedSharding):
  """Places every leaf (host or device array, same value on every process) with `sharding`."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def build(leaf):
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(build, tree)


def local_copy(tree):
  """Replicated global arrays -> the same values on this process's first device, for work one
  process does alone (pictures, reports) without waiting on the other hosts."""
  device = jax.local_devices()[0]
  return jax.tree.map(lambda a: jax.device_put(a.addressable_data(0), device), tree)
