"""Encoder and decoder networks shared by the auto-encoder families (MLP and convolutional)."""
import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from mnistgen_jax.cpu_compiler import ConvChoice


def with_label(h: jnp.ndarray, y, num_classes: int) -> jnp.ndarray:
  """Concatenates a one-hot label to flat features (class-conditional models); y=None passes h."""
  if y is None:
    return h
  return jnp.concatenate([h, nn.one_hot(y, num_classes, dtype=h.dtype)], axis=-1)


def same_padding(size: int, kernel: int, stride: int):
  """(low, high) padding of XLA/Flax 'SAME': output size ceil(size / stride)."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def extract_patches(x: jnp.ndarray, kernel: int, stride: int) -> jnp.ndarray:
  """(B,H,W,C) -> (B,H',W',kernel*kernel*C) 'SAME' patches, built from strided slices."""
  x = jnp.pad(x, ((0, 0), same_padding(x.shape[1], kernel, stride),
                  same_padding(x.shape[2], kernel, stride), (0, 0)))
  out_h, out_w = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
  return jnp.concatenate([
      x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
      for i in range(kernel) for j in range(kernel)], axis=-1)


def shifted_taps_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """'SAME' convolution as one matmul for all taps at once, then a sum of shifted slices:
  x (B,H,W,C) @ kernel as (C, kh*kw*O) gives every tap's contribution at every input pixel;
  output pixel (h, w) adds tap (i, j)'s from input pixel (stride*h + i, stride*w + j) of the padded
  grid (padding the products equals padding x: a zero pixel contributes zero).

  Cheap where kh*kw*O is small against C, i.e. a last layer to a few channels; its gradient is
  slices plus two matmuls as well, so it also stays fast inside lax.scan (see Conv)."""
  kh, kw, c, o = kernel.shape
  b, h, w, _ = x.shape
  taps = (x.reshape(-1, c) @ kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o))
  taps = jnp.pad(taps.reshape(b, h, w, kh * kw * o),
                 ((0, 0), same_padding(h, kh, stride), same_padding(w, kw, stride), (0, 0)))
  out_h, out_w = -(-h // stride), -(-w // stride)
  # One slice per tap, its channels included. Why not extract_patches' windows with the channels
  # sliced after: the same values, but XLA then pads the full windows' gradients (measured
  # over twice as slow for the conv VAE's last layer).
  return sum(taps[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride,
                  (i * kw + j) * o:(i * kw + j + 1) * o]
             for i in range(kh) for j in range(kw))


def nearest_conv_choice(module: nn.Module) -> ConvChoice:
  """The ConvChoice of the nearest enclosing module (module itself included) with a
  `conv_choice` field (the default where none has one: a layer used on its own), traced as part
  of a scanned step if any enclosing choice says so: a frozen stage 1 inside a prior keeps its
  own taps ratio, and computes as the prior's scanned step does."""
  choice, scanned = None, False
  while isinstance(module, nn.Module):
    found = getattr(module, "conv_choice", None)
    if found is not None:
      choice = choice or found
      scanned = scanned or found.scanned_step
    module = module.parent
  choice = choice or ConvChoice()
  if choice.scanned_step != scanned:
    choice = dataclasses.replace(choice, scanned_step=scanned)
  return choice


def auto_conv_impl(kernel: int, in_channels: int, features: int,
                   choice: ConvChoice = ConvChoice()) -> str:
  """Conv's impl='auto' choice, by measurement on XLA:CPU (jaxlib 0.10.2; GPU/TPU: always 'xla').

  'taps' where the taps' products are few against the input, kernel**2 * features <=
  choice.taps_ratio * C: the last layer to a few channels and 1x1 convolutions, which XLA:CPU's
  native convolution runs far below the matmul peak (taps measured over twice as fast for the
  conv VAE's last layer; the default ratio is where taps stopped winning). 'patches' inside a
  scanned training step (choice.scanned_step): XLA:CPU lowers convolution gradients there to a
  generic emitter, many times slower than outside a loop (jax #12868). Else the native
  convolution (faster than the patches for the conv VAE's IWAE bound)."""
  if jax.default_backend() != "cpu":
    return "xla"
  if kernel * kernel * features <= choice.taps_ratio * in_channels:
    return "taps"
  return "patches" if choice.scanned_step else "xla"


class Conv(nn.Module):
  """A 'SAME' 2-D convolution with nn.Conv's parameters, computed as impl says: XLA's native
  convolution ('xla'), patches @ kernel ('patches'), or one matmul for all taps plus shifted sums
  ('taps', shifted_taps_conv); 'auto' picks by shape and by the enclosing family's ConvChoice
  (auto_conv_impl). The three
  agree up to float32 rounding (tested against nn.Conv, gradients included)."""
  features: int
  kernel: int = 3
  stride: int = 1
  impl: str = "auto"  # auto | taps | patches | xla (auto_conv_impl)
  kernel_init: Callable = nn.initializers.lecun_normal()
  causal: str = ""  # '' | 'A' | 'B': PixelCNN's masks (causal_mask), for autoregressive models

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel, self.kernel, x.shape[-1], self.features))
    if self.causal:
      kernel = kernel * causal_mask(self.kernel, self.causal)[:, :, None, None]
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    impl = self.impl if self.impl != "auto" else auto_conv_impl(
        self.kernel, x.shape[-1], self.features, nearest_conv_choice(self))
    if impl == "taps":
      y = shifted_taps_conv(x, kernel, self.stride)
    elif impl == "patches":
      y = extract_patches(x, self.kernel, self.stride) @ kernel.reshape(-1, self.features)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (self.stride,) * 2, "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


def causal_mask(kernel: int, mask_type: str) -> jnp.ndarray:
  """(kernel, kernel) 0/1 mask of a PixelCNN convolution (van den Oord et al. 2016) over pixels in
  raster order: the rows above the centre and, in the centre row, the pixels left of it; type 'B'
  also keeps the centre (a hidden layer may see its own position's features, which were computed
  from earlier pixels only), type 'A' does not (the first layer must not see the pixel it predicts).
  One image channel, so no masking between channels is needed."""
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  centre = kernel // 2
  rows, cols = jnp.meshgrid(jnp.arange(kernel), jnp.arange(kernel), indexing="ij")
  before = (rows < centre) | ((rows == centre) & (cols < centre))
  return (before | ((rows == centre) & (cols == centre) & (mask_type == "B"))).astype(jnp.float32)


def depth_to_space(x: jnp.ndarray, block: int = 2) -> jnp.ndarray:
  """(B,H,W,block*block*C) -> (B,block*H,block*W,C)."""
  b, h, w, c = x.shape
  c //= block * block
  x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c)


def space_to_depth(x: jnp.ndarray, block: int = 2) -> jnp.ndarray:
  """(B,block*H,block*W,C) -> (B,H,W,block*block*C); the inverse of depth_to_space."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


class Upsample(nn.Module):
  """2x upsampling by a sub-pixel convolution (Shi et al. 2016): a 3x3 conv to 4*C, then
  depth_to_space; as expressive as a 4x4 stride-2 transposed conv, without its zero-filled input."""
  features: int
  impl: str = "auto"
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    return depth_to_space(Conv(4 * self.features, 3, impl=self.impl,
                               kernel_init=self.kernel_init)(x))


# Hidden-layer nonlinearities by config name (tanh: the IWAE paper's networks).
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


class Encoder(nn.Module):
  """Image (B,H,W,C) in [0,1] -> (B, features); `arch` is 'mlp' or 'conv'."""
  arch: str
  features: int
  hidden: Sequence[int]
  channels: Sequence[int]
  num_classes: int  # of the label y, when one is given
  activation: str = "relu"  # a name in ACTIVATIONS

  @nn.compact
  def __call__(self, x, y=None):
    act = ACTIVATIONS[self.activation]
    h = x
    if self.arch == "conv":
      for c in self.channels:  # Each stride-2 conv halves the resolution: 28 -> 14 -> 7.
        h = act(Conv(c, 4, stride=2)(h))
    h = with_label(h.reshape(h.shape[0], -1), y, self.num_classes)
    for width in self.hidden:
      h = act(nn.Dense(width)(h))
    return nn.Dense(self.features)(h)


class Decoder(nn.Module):
  """Code (B, d) -> Bernoulli logits (B,H,W,C); mirrors Encoder."""
  arch: str
  hidden: Sequence[int]
  channels: Sequence[int]
  num_classes: int
  image_shape: Sequence[int]  # (H, W, C)
  activation: str = "relu"  # a name in ACTIVATIONS

  @nn.compact
  def __call__(self, z, y=None):
    act = ACTIVATIONS[self.activation]
    h = with_label(z, y, self.num_classes)
    for width in reversed(self.hidden):
      h = act(nn.Dense(width)(h))
    if self.arch == "mlp":
      return nn.Dense(math.prod(self.image_shape))(h).reshape(-1, *self.image_shape)
    height, width = (s // 2 ** len(self.channels) for s in self.image_shape[:2])
    h = act(nn.Dense(height * width * self.channels[-1])(h))
    h = h.reshape(-1, height, width, self.channels[-1])
    for c in reversed(self.channels[:-1]):
      h = act(Upsample(c)(h))
    return Upsample(self.image_shape[-1])(h)


@jax.custom_jvp
def sigmoid_cross_entropy(logits: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """Elementwise -x log sigmoid(l) - (1 - x) log sigmoid(-l) for x in [0, 1]: the function of
  optax.sigmoid_binary_cross_entropy, as max(l, 0) - x l + log1p(exp(-|l|)), with its derivative
  sigmoid(l) - x (and -l for x) written out.

  Why not optax's: its two log-sigmoids and their autodiff gradient became four elementwise loops
  in XLA:CPU's train step, each recomputing the decoder's last layer fused into it (the taps' sum
  and depth_to_space); this is one exp-log1p loop and one for the gradient, which made the train
  steps of `conv_vae`, `vqvae`, `vae` and `hvae` faster (in-process A/Bs, experiments.step_ab).
  Values within float rounding of optax's (max error
  against float64 1.1e-6 vs 1.5e-6), the gradient closer (1.2e-7 vs 5.1e-7; tested)."""
  return _cross_entropy(logits, x, jnp.exp(-jnp.abs(logits)))


def _cross_entropy(logits, x, exp_minus_abs):
  return jnp.maximum(logits, 0) - x * logits + jnp.log1p(exp_minus_abs)


@sigmoid_cross_entropy.defjvp
def _sigmoid_cross_entropy_jvp(primals, tangents):
  logits, x = primals
  logits_dot, x_dot = tangents
  e = jnp.exp(-jnp.abs(logits))  # Shared by the value and the sigmoid.
  sigmoid = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)  # Never exp of a positive number.
  return _cross_entropy(logits, x, e), (sigmoid - x) * logits_dot - logits * x_dot


def bernoulli_nll(logits: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """Per-image -log p(x | logits), summed over pixels (nats); x in [0,1] (grayscale BCE).

  The sum over pixels is a product with a vector of ones. Why: XLA:CPU fused a reduce into the
  loop that writes the IWAE bound's per-pass results and ran it serially, and the dot is closer to the exact sum (mean error 4.5e-5 against
  2.0e-4 nats per image for 784 pixels, measured against float64). HIGHEST: float32 products on
  GPU/TPU too, never TF32 or bfloat16 passes."""
  per_pixel = sigmoid_cross_entropy(logits, x)
  per_pixel = per_pixel.reshape(per_pixel.shape[0], -1)
  return jnp.matmul(per_pixel, jnp.ones(per_pixel.shape[1], per_pixel.dtype),
                    precision=jax.lax.Precision.HIGHEST)



def map_over_samples(fn: Callable, z: jnp.ndarray, samples_per_pass: int = 0) -> jnp.ndarray:
  """fn over the leading (importance-sample) axis of z: all K at once (vmap) when samples_per_pass
  is 0 or >= K, else samples_per_pass at a time (lax.map over groups, vmap within each).

  Why: K x B decodes at once (50,000 in a K = 5000 evaluation chunk) overflow the CPU caches; a
  group of ~1,000 decodes stays in them and ran 1.3x (conv VAE) to 1.75x (MLP VAE) faster. The same
  draws and the same values up to float rounding (tested)."""
  if samples_per_pass <= 0 or samples_per_pass >= z.shape[0]:
    return jax.vmap(fn)(z)
  return jax.lax.map(fn, z, batch_size=samples_per_pass)


def gaussian_log_density(z, mean, logvar):
  """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
  return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + logvar + jnp.square(z - mean) * jnp.exp(-logvar),
                        axis=-1)


def importance_weighted_losses(log_w: jnp.ndarray, objective: str) -> dict:
  """Per-example training losses from (B, k) log importance weights log p(x, z_k) - log q(z_k|x):
  neg_elbo_k = mean_k -log w_k (the k-sample ELBO estimate), neg_iwae_k = -log mean_k w_k (the
  IWAE bound, Burda et al. 2016: never above neg_elbo_k), 'loss' the one named by objective."""
  neg_elbo = -jnp.mean(log_w, axis=1)
  neg_iwae = -(jax.scipy.special.logsumexp(log_w, axis=1) - jnp.log(log_w.shape[1]))
  return {"loss": neg_iwae if objective == "iwae" else neg_elbo, "neg_elbo_k": neg_elbo,
          "neg_iwae_k": neg_iwae}

