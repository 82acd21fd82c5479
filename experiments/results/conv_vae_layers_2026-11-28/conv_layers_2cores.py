"""The conv VAE's four convolutions at batch 128 on both cores, compiled without YNN fusions (the
conv VAE's setting): forward, kernel gradient (dk), both gradients (dx+dk), ms (median of 15),
beside the matmul roofline of the same process; the stride-2 layers also as a 2x2 stride-1
convolution of space_to_depth(pad(x, 1)) (the same sums, float rounding apart).

  .venv/bin/python experiments/results/conv_vae_layers_2026-11-28/conv_layers_2cores.py
"""
import numpy as np, jax, jax.numpy as jnp
from mnistgen_jax.cli.benchmark import matmul_roofline, median_seconds
from mnistgen_jax import cpu_compiler
from mnistgen_jax.models import nets
NOYNN = cpu_compiler.compiler_options(ynn_fusions=False)
BATCH, REPEATS = 128, 15
conv = lambda x, w, s=1, pad="SAME": jax.lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
def s2d_conv(x, k):
  """4x4 stride-2 SAME conv as a 2x2 VALID conv on space_to_depth(pad(x, 1))."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  X = nets.space_to_depth(x)
  kh, kw, c, o = k.shape
  K = k.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, o)
  return conv(X, K, 1, "VALID")
def median_ms(fn, *args):
  jax.block_until_ready(fn(*args))
  return 1e3 * median_seconds(lambda: jax.block_until_ready(fn(*args)), REPEATS)
print(f"roofline {matmul_roofline(REPEATS):.1f}")
LAYERS = {"up1 7x7 64->128 k3": (7, 64, 128, 3, 1), "up2 14x14 32->4 k3": (14, 32, 4, 3, 1),
          "enc2 14x14 32->64 k4s2": (14, 32, 64, 4, 2), "enc1 28x28 1->32 k4s2": (28, 1, 32, 4, 2)}
for name, (size, ci, co, kk, s) in LAYERS.items():
  x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, size, size, ci))
  k = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (kk, kk, ci, co))
  osz = -(-size // s); mflop = 2 * BATCH * osz**2 * kk**2 * ci * co / 1e6
  impls = {"xla": lambda x, k: conv(x, k, s)}
  if s == 2:
    impls["s2d"] = s2d_conv
    print("  s2d max diff", float(jnp.abs(s2d_conv(x, k) - conv(x, k, 2)).max()))
  for iname, f in impls.items():
    dy = jnp.ones((BATCH, osz, osz, co))
    fw = jax.jit(f, compiler_options=NOYNN)
    both = jax.jit(lambda x, k, dy: jax.vjp(f, x, k)[1](dy), compiler_options=NOYNN)
    dk = jax.jit(lambda x, k, dy: jax.vjp(lambda k: f(x, k), k)[1](dy)[0], compiler_options=NOYNN)
    a, b, c = median_ms(fw, x, k), median_ms(both, x, k, dy), median_ms(dk, x, k, dy)
    print(f"{name:24s} {iname:5s} fwd {a:6.2f} ({mflop/a:5.1f} GF/s) dk {c:6.2f} dx+dk {b:6.2f} ({2*mflop/b:5.1f} GF/s)", flush=True)
