"""Pictures: image grids (PIL), latent scatter plots and loss curves (matplotlib, Agg)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # Headless: no display on servers or CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def to_uint8(images) -> np.ndarray:
  """float images in [0,1] (or uint8) -> uint8 of the same shape."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.rint(np.clip(images.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
  return images


def grid(images, ncol: int, pad: int = 2) -> np.ndarray:
  """Tiles N images into rows of `ncol`, white-on-black with `pad` grey pixels between them."""
  images = to_uint8(images)
  images = images.reshape(images.shape[:3])  # (N, H, W[, 1]) -> (N, H, W)
  n, h, w = images.shape
  nrow = -(-n // ncol)
  canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 128, np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, ncol)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
  return canvas


def save_grid(path: str, images, ncol: int, scale: int = 2) -> None:
  canvas = grid(images, ncol)
  Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale),
                                 Image.NEAREST).save(path)


def save_latent_scatter(path: str, panels) -> None:
  """panels: [(codes (N, d), labels (N,), title)], side by side, points coloured by digit; codes
  of more than 2 dimensions are shown on their first two principal components."""
  from mnistgen_jax.latent import project_2d
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4.8), dpi=120,
                           squeeze=False, layout="constrained")
  for ax, (codes, labels, title) in zip(axes[0], panels):
    points, (xlabel, ylabel) = project_2d(codes)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=np.asarray(labels), cmap="tab10", s=2,
                         alpha=0.6, vmin=-0.5, vmax=9.5)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  fig.colorbar(scatter, ax=list(axes[0]), ticks=range(10), label="digit")
  fig.savefig(path)
  plt.close(fig)


def save_curves(path: str, train: dict, evals: dict, title: str) -> None:
  """train/evals: {metric: (steps, values)}; one panel per metric, train and test overlaid."""
  names = sorted(train, key=lambda k: k != "loss")  # 'loss' first.
  fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), dpi=110, squeeze=False)
  for ax, name in zip(axes[0], names):
    ax.plot(*train[name], lw=0.8, alpha=0.7, label="train (per step)")
    if name in evals:
      ax.plot(*evals[name], "o-", label="test (epoch end)")
    tail = np.asarray(train[name][1])[len(train[name][1]) // 50:]
    if tail.size:  # Zoom past the first steps, whose loss dwarfs the rest.
      low, high = np.percentile(tail, [0, 99.5])
      if np.isfinite([low, high]).all() and high > low:
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set(title=name, xlabel="step")
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def save_nll_curves(path: str, series) -> None:
  """series: [(label, {epoch: (test bound, seconds)}, [(epoch, nll, stderr, images)], paper NLL
  or None)]; the test bounds as lines, the NLLs as points with error bars, the paper's dashed,
  against epochs on a log axis (the IWAE schedule's stages are 3^i epochs long)."""
  fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
  for i, (label, curve, nlls, paper) in enumerate(series):
    color = f"C{i}"
    epochs = sorted(curve)
    ax.plot(epochs, [curve[e][0] for e in epochs], color=color, lw=1, alpha=0.6,
            label=f"{label}: test bound of its objective, per epoch")
    if nlls:
      e, nll, err, images = zip(*nlls)
      # Which test images the points are of: a subset reads easier than the whole set.
      one_subset = len(set(images)) == 1 and isinstance(images[0], int)
      subset = f", first {images[0]:,} test images" if one_subset else ""
      ax.errorbar(e, nll, yerr=err, color=color, fmt="o-", ms=4, capsize=2,
                  label=f"{label}: NLL, k = 5000{subset}")
    if paper is not None:
      ax.axhline(paper, color=color, ls="--", lw=1, label=f"{label}: paper, 3280 epochs")
  ax.set_xscale("log")
  ax.set(xlabel="epoch", ylabel="nats per image", title="binarized MNIST test set")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def save_code_usage(path: str, counts, title: str) -> None:
  """Histogram of codebook usage, codes sorted from most to least used."""
  counts = np.sort(np.asarray(counts))[::-1]
  fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
  ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1), width=1.0)
  ax.set(title=title, xlabel="code (sorted by use)", ylabel="fraction of test-set positions")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
