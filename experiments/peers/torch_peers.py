r"""PyTorch peers of our families' train steps, for the README's same-machine speed comparison.

Optional and outside the library: the project never imports torch. Install it in a separate
venv (here a CPU build: `python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy`),
then

  /tmp/torch/bin/python experiments/peers/torch_peers.py --families=conv_vae,vae,vqvae,dcgan

Each peer has our default config's layers, widths, losses and optimizer (batch 128; dcgan: its
default batch 64, hidden 1024, R1 on real images, EMA of G, D then G per step; not the EMA
generator's own BatchNorm statistics, one more G forward per step in ours), and is timed
the way experiments/benchmark.py times ours: img/s of chunks of steps after a warm-up, median.
Synthetic uint8 digits (MNIST's shape) stand in for the data: speed does not depend on pixels.
"""
import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ConvVAE(nn.Module):
  """mnistgen_jax conv_vae: conv 4x4/2 32, conv 4x4/2 64, dense 256, z 20; decoder mirrors it with
  dense 256, dense 7x7x64 and two sub-pixel (3x3 conv + pixel shuffle) upsamplings."""

  def __init__(self, latent=20, hidden=256, channels=(32, 64)):
    super().__init__()
    c1, c2 = channels
    self.enc = nn.Sequential(nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(7 * 7 * c2, hidden), nn.ReLU(),
                             nn.Linear(hidden, 2 * latent))
    self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 7 * 7 * c2),
                             nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)), nn.Conv2d(c2, 4 * c1, 3, 1, 1),
                             nn.PixelShuffle(2), nn.ReLU(), nn.Conv2d(c1, 4, 3, 1, 1),
                             nn.PixelShuffle(2))

  def loss(self, x):
    mean, logvar = self.enc(x).chunk(2, dim=1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    recon = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
    kl = 0.5 * torch.sum(logvar.exp() + mean**2 - 1 - logvar)
    return (recon + kl) / x.shape[0]


class MLPVAE(ConvVAE):
  """mnistgen_jax vae: the pytorch/examples recipe, 784-400-20."""

  def __init__(self, latent=20, hidden=400):
    nn.Module.__init__(self)
    self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(),
                             nn.Linear(hidden, 2 * latent))
    self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 784),
                             nn.Unflatten(1, (1, 28, 28)))


class VQVAE(nn.Module):
  """mnistgen_jax vqvae: conv 4x4/2 32, conv 4x4/2 64, 1x1 to 16-d codes, nearest of 128 codes,
  straight-through; decoder 3x3 conv 64 and two sub-pixel upsamplings; BCE + 0.25 x commitment;
  EMA codebook (decay 0.99, Laplace smoothing) with codes unused 100 steps restarted."""

  def __init__(self, num_codes=128, code_dim=16, channels=(32, 64), beta=0.25, decay=0.99,
               restart_after=100):
    super().__init__()
    c1, c2 = channels
    self.beta, self.decay, self.restart_after = beta, decay, restart_after
    self.enc = nn.Sequential(nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1),
                             nn.ReLU(), nn.Conv2d(c2, code_dim, 1))
    self.dec = nn.Sequential(nn.Conv2d(code_dim, c2, 3, 1, 1), nn.ReLU(),
                             nn.Conv2d(c2, 4 * c1, 3, 1, 1), nn.PixelShuffle(2), nn.ReLU(),
                             nn.Conv2d(c1, 4, 3, 1, 1), nn.PixelShuffle(2))
    bound = (3.0 / code_dim) ** 0.5  # variance_scaling(1, fan_in, uniform), as ours
    codebook = torch.empty(num_codes, code_dim).uniform_(-bound, bound)
    self.register_buffer("codebook", codebook)
    self.register_buffer("cluster_size", torch.ones(num_codes))
    self.register_buffer("embed_sum", codebook.clone())
    self.register_buffer("unused", torch.zeros(num_codes, dtype=torch.int32))

  def loss(self, x):
    z_e = self.enc(x)  # (B, D, 7, 7)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
    distances = ((flat**2).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.T
                 + (self.codebook**2).sum(1)[None, :])
    indices = distances.argmin(1)
    e = self.codebook[indices].reshape(z_e.shape[0], 7, 7, -1).permute(0, 3, 1, 2)
    quantized = z_e + (e - z_e).detach()  # Straight-through.
    recon = F.binary_cross_entropy_with_logits(self.dec(quantized), x, reduction="sum")
    commitment = ((z_e - e.detach()) ** 2).sum()
    with torch.no_grad():  # The EMA codebook step and the dead-code restart, as ours.
      one_hot = F.one_hot(indices, self.codebook.shape[0]).float()
      counts = one_hot.sum(0)
      self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
      self.embed_sum.mul_(self.decay).add_(one_hot.T @ flat, alpha=1 - self.decay)
      n = self.cluster_size.sum()
      smoothed = (self.cluster_size + 1e-5) / (n + self.codebook.shape[0] * 1e-5) * n
      self.codebook.copy_(self.embed_sum / smoothed[:, None])
      self.unused.copy_(torch.where(counts > 0, 0, self.unused + 1))
      dead = self.unused >= self.restart_after
      picks = flat[torch.randint(0, flat.shape[0], (self.codebook.shape[0],))]
      self.codebook.copy_(torch.where(dead[:, None], picks, self.codebook))
      self.embed_sum.copy_(torch.where(dead[:, None], picks, self.embed_sum))
      self.cluster_size.copy_(torch.where(dead, 1.0, self.cluster_size))
      self.unused.copy_(torch.where(dead, 0, self.unused))
    return (recon + self.beta * commitment) / x.shape[0]


def vae_step(model_cls):
  model = model_cls()
  opt = torch.optim.Adam(model.parameters(), 1e-3)

  def step(x):
    opt.zero_grad(set_to_none=True)
    loss = model.loss(x)
    loss.backward()
    opt.step()
    return loss
  return step


class Generator(nn.Module):
  """mnistgen_jax dcgan G: [dense hidden+BN+ReLU,] dense 7x7xC1+BN+ReLU, sub-pixel up to 14x14xC2
  +BN+ReLU, sub-pixel up to 28x28x1, sigmoid."""

  def __init__(self, latent=64, channels=(128, 64), hidden=1024):
    super().__init__()
    top, mid = channels
    head = [nn.Linear(latent, hidden), nn.BatchNorm1d(hidden, momentum=0.1), nn.ReLU()] if hidden else []
    self.net = nn.Sequential(*head, nn.Linear(hidden or latent, 7 * 7 * top),
                             nn.BatchNorm1d(7 * 7 * top), nn.ReLU(), nn.Unflatten(1, (top, 7, 7)),
                             nn.Conv2d(top, 4 * mid, 3, 1, 1), nn.PixelShuffle(2),
                             nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, 4, 3, 1, 1),
                             nn.PixelShuffle(2), nn.Sigmoid())

  def forward(self, z):
    return self.net(z)


class Discriminator(nn.Module):
  def __init__(self, channels=(64, 128), hidden=1024):
    super().__init__()
    c1, c2 = channels
    head = [nn.Linear(7 * 7 * c2, hidden), nn.LeakyReLU(0.2)] if hidden else []
    self.net = nn.Sequential(nn.Conv2d(1, c1, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c1, c2, 4, 2, 1),
                             nn.LeakyReLU(0.2), nn.Flatten(), *head, nn.Linear(hidden or 7 * 7 * c2, 1))

  def forward(self, x):
    return self.net(x)[:, 0]


def dcgan_step(latent=64, r1_gamma=1.0, ema_decay=0.999, lr=2e-4, **kw):
  g, d = Generator(latent, **{k: v for k, v in kw.items() if k in ("channels", "hidden")}), \
      Discriminator(hidden=kw.get("hidden", 1024))
  g_ema = Generator(latent, **{k: v for k, v in kw.items() if k in ("channels", "hidden")})
  g_ema.load_state_dict(g.state_dict())
  opt_g = torch.optim.Adam(g.parameters(), lr, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(d.parameters(), lr, betas=(0.5, 0.999))

  def step(x):
    z = torch.randn(x.shape[0], latent)
    # D step: BCE on real and fake, R1 = gamma/2 |grad_x D(x)|^2 on real images.
    opt_d.zero_grad(set_to_none=True)
    x = x.requires_grad_(r1_gamma > 0)
    real = d(x)
    fake = d(g(z).detach())
    d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
              + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if r1_gamma > 0:
      (grad,) = torch.autograd.grad(real.sum(), x, create_graph=True)
      d_loss = d_loss + 0.5 * r1_gamma * grad.pow(2).flatten(1).sum(1).mean()
    d_loss.backward()
    opt_d.step()
    # G step against the updated D (non-saturating loss), then the EMA of G's weights.
    opt_g.zero_grad(set_to_none=True)
    out = d(g(z))
    g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():
      for p_ema, p in zip(g_ema.parameters(), g.parameters()):
        p_ema.lerp_(p, 1 - ema_decay)
    return g_loss
  return step


FAMILIES = {
    "vae": (lambda: vae_step(MLPVAE), 128),
    "conv_vae": (lambda: vae_step(ConvVAE), 128),
    "vqvae": (lambda: vae_step(VQVAE), 128),
    "dcgan": (lambda: dcgan_step(), 64),
    "dcgan_h0_b128": (lambda: dcgan_step(hidden=0), 128),
}


def bench(name, chunks, chunk_steps, threads):
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  make, batch = FAMILIES[name]
  step = make()
  rng = np.random.default_rng(0)
  data = torch.from_numpy(rng.integers(0, 256, (chunk_steps, batch, 1, 28, 28), dtype=np.uint8))
  for i in range(chunk_steps):  # Warm-up.
    step(data[i].float() / 255)
  rates = []
  for _ in range(chunks):
    start = time.perf_counter()
    for i in range(chunk_steps):
      step(data[i].float() / 255)
    rates.append(chunk_steps * batch / (time.perf_counter() - start))
  return statistics.median(rates), rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--families", default="vae,conv_vae,vqvae,dcgan")
  parser.add_argument("--chunks", type=int, default=5)
  parser.add_argument("--chunk_steps", type=int, default=50)
  parser.add_argument("--threads", type=int, default=torch.get_num_threads())
  args = parser.parse_args()
  for name in args.families.split(","):
    if name not in FAMILIES:
      raise SystemExit(f"torch_peers.py: unknown family '{name}'; one of {sorted(FAMILIES)}")
    median, rates = bench(name, args.chunks, args.chunk_steps, args.threads)
    print(f"torch {torch.__version__} {args.threads} threads {name}: train {median:,.0f} img/s "
          f"(chunks: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)


if __name__ == "__main__":
  main()
