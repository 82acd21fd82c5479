"""Conv layers of the families at batch 128, three ways: XLA's native convolution, 'taps'
(nets.shifted_taps_conv: one matmul for all taps, then shifted sums) and 'patches' (patches @
kernel), forward + backward ms (median of 11), compiled without YNN fusions (as the conv families
compile); ratio = kernel**2 * features / in_channels, the quantity nets.auto_conv_impl compares
with TAPS_RATIO = 2.

  .venv/bin/python experiments/results/conv_taps_2026-11-28/taps_sweep.py
"""
import jax

from mnistgen_jax.cli.benchmark import matmul_roofline, median_seconds
from mnistgen_jax import cpu_compiler
from mnistgen_jax.models.nets import extract_patches, shifted_taps_conv

NOYNN = cpu_compiler.compiler_options(ynn_fusions=False)
BATCH = 128


def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  return 1e3 * median_seconds(lambda: jax.block_until_ready(fn(*args)), 11)


def native(x, w, s):
  return jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches(x, w, s):
  return extract_patches(x, w.shape[0], s) @ w.reshape(-1, w.shape[-1])


print("roofline", matmul_roofline(10))
for size, c, o, k, s in [(14, 32, 4, 3, 1), (14, 64, 4, 3, 1), (14, 128, 4, 3, 1), (28, 32, 1, 3, 1),
                         (28, 64, 1, 3, 1), (14, 32, 8, 3, 1), (14, 32, 16, 3, 1), (7, 64, 16, 1, 1),
                         (7, 64, 64, 1, 1), (14, 32, 64, 1, 1), (28, 32, 32, 3, 1), (14, 32, 64, 4, 2),
                         (28, 1, 32, 4, 2)]:
  x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, size, size, c))
  w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (k, k, c, o))
  out = -(-size // s)
  dy = jax.random.normal(jax.random.PRNGKey(2), (BATCH, out, out, o))
  row = []
  for name, f in {"xla": native, "taps": shifted_taps_conv, "patches": patches}.items():
    fw = jax.jit(lambda x, w: f(x, w, s), compiler_options=NOYNN)
    bw = jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: f(x, w, s), x, w)[1](dy),
                 compiler_options=NOYNN)
    row.append(f"{name} {median_ms(fw, x, w):6.2f}+{median_ms(bw, x, w, dy):6.2f}")
  print(f"{size}x{size} {c:3d}->{o:3d} k{k}s{s} ratio {k*k*o/c:5.2f}: " + " | ".join(row), flush=True)
