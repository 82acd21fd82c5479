r"""Winograd's minimal filtering (Lavin & Gray 2016) for the 3x3 'SAME' stride-1 convolutions of
the sub-pixel upsamplings, against XLA's native convolution: the F(2x2,3x3) and F(4x4,3x3)
transforms, each two ways (einsum of the small transform matrices; one matmul with their
Kronecker product), forward and backward (input and kernel gradients by autodiff) ms, median of
11, batch 128, compiled without YNN fusions (as the conv families compile), and the largest
error relative to the native output / gradients. Multiplications per output: 441/256 = 1.7x
fewer (F(2,3)) and 441/144 = 3.1x fewer (F(4,3)) than direct on a 7x7 map.

  .venv/bin/python experiments/results/conv_fewer_flops_2026-11-28/winograd.py
"""
import jax
import jax.numpy as jnp
import numpy as np

from mnistgen_jax.cli.benchmark import matmul_roofline, median_seconds
from mnistgen_jax import cpu_compiler

NOYNN = cpu_compiler.compiler_options(ynn_fusions=False)
TRANSFORMS = {  # m (output tile side), B^T, G, A^T: Y = A^T [(G g G^T) * (B^T d B)] A
    "F(2,3)": (2, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
               [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], [[1, 1, 1, 0], [0, 1, -1, -1]]),
    "F(4,3)": (4, [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
               [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
               [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def winograd_conv(x, kernel, transform, kron):
  m = TRANSFORMS[transform][0]
  bt, g, at = (np.asarray(t, np.float32) for t in TRANSFORMS[transform][1:])
  a = m + 2  # Input tile side.
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  nh, nw = -(-h // m), -(-w // m)
  xp = jnp.pad(x, ((0, 0), (1, nh * m + 1 - h), (1, nw * m + 1 - w), (0, 0)))
  tiles = jnp.stack([xp[:, u:u + m * (nh - 1) + 1:m, v:v + m * (nw - 1) + 1:m, :]
                     for u in range(a) for v in range(a)])  # (a*a, B, nh, nw, C)
  if kron:
    v_ = np.kron(bt, bt) @ tiles.reshape(a * a, -1)
  else:
    v_ = jnp.einsum("pu,uvbhwc,qv->pqbhwc", bt, tiles.reshape(a, a, b, nh, nw, c), bt)
  u_ = jnp.einsum("pi,ijco,qj->pqco", g, kernel, g)
  prod = jnp.matmul(v_.reshape(a * a, -1, c), u_.reshape(a * a, c, o))  # (a*a, B*nh*nw, O)
  if kron:
    y = (np.kron(at, at) @ prod.reshape(a * a, -1)).reshape(m, m, b, nh, nw, o)
    y = y.transpose(2, 3, 0, 4, 1, 5)
  else:
    y = jnp.einsum("ip,pqbhwo,jq->bhiwjo", at, prod.reshape(a, a, b, nh, nw, o), at)
  return y.reshape(b, nh * m, nw * m, o)[:, :h, :w, :]


def native(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  return 1e3 * median_seconds(lambda: jax.block_until_ready(fn(*args)), 11)


def main():
  print("roofline GFLOP/s", round(matmul_roofline(10), 1))
  for size, c, o in [(7, 64, 128), (7, 128, 256), (14, 32, 64)]:
    x = jax.random.normal(jax.random.PRNGKey(0), (128, size, size, c))
    kernel = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, o))
    dy = jax.random.normal(jax.random.PRNGKey(2), (128, size, size, o))
    ref, ref_vjp = jax.vjp(native, x, kernel)
    ref_grads = ref_vjp(dy)
    ways = {"native": native}
    for transform in TRANSFORMS:
      for kron in (False, True):
        ways[f"{transform} {'kron' if kron else 'einsum'}"] = (
            lambda x, k, t=transform, kr=kron: winograd_conv(x, k, t, kr))
    print(f"{size}x{size} {c}->{o} (batch 128): forward + backward ms, max error / max |ref|")
    for name, f in ways.items():
      y, vjp = jax.vjp(f, x, kernel)
      err = float(jnp.max(jnp.abs(y - ref)) / jnp.max(jnp.abs(ref)))
      gerr = max(float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r)))
                 for g, r in zip(vjp(dy), ref_grads))
      fwd = jax.jit(f, compiler_options=NOYNN)
      bwd = jax.jit(lambda x, k, dy, f=f: jax.vjp(f, x, k)[1](dy), compiler_options=NOYNN)
      print(f"  {name:15s} {median_ms(fwd, x, kernel):6.2f} + {median_ms(bwd, x, kernel, dy):6.2f}"
            f"   error {err:.1e} / {gerr:.1e}", flush=True)


if __name__ == "__main__":
  main()
