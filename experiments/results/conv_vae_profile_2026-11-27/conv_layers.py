"""The conv VAE's four convolutions one by one (batch 128): forward, input gradient (dx), kernel
gradient (dk) and both, in ms (median), for `nets.Conv`'s two implementations (XLA's native
convolution and patches @ kernel), beside the matmul roofline of the same process.

  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 .venv/bin/python \
      experiments/results/conv_vae_profile_2026-11-27/conv_layers.py
"""
import jax
import jax.numpy as jnp

from mnistgen_jax.cli.benchmark import matmul_roofline, median_seconds
from mnistgen_jax.models import nets

BATCH, REPEATS = 128, 15
LAYERS = {  # name: (input size, in channels, out channels, kernel, stride)
    "up1 7x7 64->128 k3": (7, 64, 128, 3, 1),
    "up2 14x14 32->4 k3": (14, 32, 4, 3, 1),
    "enc2 14x14 32->64 k4s2": (14, 32, 64, 4, 2),
    "enc1 28x28 1->32 k4s2": (28, 1, 32, 4, 2),
}


def median_ms(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # Compilation.
  return 1e3 * median_seconds(lambda: jax.block_until_ready(fn(*args)), REPEATS)


def main():
  print(f"roofline {matmul_roofline(REPEATS):.1f} GFLOP/s")
  for name, (size, c_in, c_out, kernel, stride) in LAYERS.items():
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, size, size, c_in))
    k = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, c_in, c_out))
    out_size = -(-size // stride)
    mflop = 2 * BATCH * out_size**2 * kernel**2 * c_in * c_out / 1e6
    for impl in ("xla", "patches"):
      layer = nets.Conv(c_out, kernel, stride, impl=impl)
      conv = lambda x, k: layer.apply({"params": {"kernel": k, "bias": jnp.zeros(c_out)}}, x)
      dy = jnp.ones((BATCH, out_size, out_size, c_out))
      forward = jax.jit(conv)
      dx = jax.jit(lambda x, k, dy: jax.vjp(lambda x: conv(x, k), x)[1](dy)[0])
      dk = jax.jit(lambda x, k, dy: jax.vjp(lambda k: conv(x, k), k)[1](dy)[0])
      both = jax.jit(lambda x, k, dy: jax.vjp(conv, x, k)[1](dy))
      t_fwd, t_dx, t_dk, t_both = (median_ms(forward, x, k), median_ms(dx, x, k, dy),
                                   median_ms(dk, x, k, dy), median_ms(both, x, k, dy))
      print(f"{name:24s} {impl:8s} fwd {t_fwd:6.2f} ms ({mflop / t_fwd:5.1f} GF/s) dx {t_dx:6.2f} "
            f"dk {t_dk:6.2f} dx+dk {t_both:6.2f} ms  [{mflop:.1f} MFLOP forward]")


if __name__ == "__main__":
  main()
