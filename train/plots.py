"""RUN/recon.png (inputs above reconstructions) and RUN/curves.png (per-epoch metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fsqdeploy.fileio import write_with
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE


def image_grid(rows: list[np.ndarray], scale: int = 3, pad: int = 2) -> Image.Image:
    """Stack rows of float [N, 3, S, S] images into one RGB picture, each image scaled up."""
    n, s = rows[0].shape[0], rows[0].shape[-1]
    cell = s * scale + pad
    canvas = np.full((len(rows) * cell + pad, n * cell + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for i, img in enumerate(row):
            pixels = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
            pixels = pixels.repeat(scale, 0).repeat(scale, 1)
            y, x = pad + r * cell, pad + i * cell
            canvas[y : y + s * scale, x : x + s * scale] = pixels
    return Image.fromarray(canvas)


@torch.no_grad()
def save_recon_grid(model: FSQVAE, images: np.ndarray, path: Path, count: int = 16) -> None:
    was_training = model.training
    model.eval()
    x = images_to_float(images[:count])
    device = next(model.parameters()).device
    recon = model.decode(model.encode(torch.from_numpy(x).to(device))).cpu().numpy()
    model.train(was_training)
    grid = image_grid([x, recon])
    write_with(path, lambda tmp: grid.save(tmp, format="PNG"))


def save_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = "step" if history and "step" in history[0] else "epoch"  # conv runs log by step
    epochs = [m[axis] for m in history]
    panels = [
        ("loss", ["train_loss", "test_loss"]),
        ("PSNR (dB)", ["test_psnr"]),
        ("temperature", ["temperature"]),
        ("perplexity (levels)", ["perplexity"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            ys = [m.get(key) for m in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
