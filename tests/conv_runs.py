"""A tiny spatial (conv) run with random weights and real BatchNorm statistics, for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig
from fsqdeploy.data import load_images
from fsqdeploy.fsq import parse_levels
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE


def make_conv_run(path: Path, channels: tuple[int, ...] = (8, 8, 8), stages: int = 2,
                  linear_path: bool = True) -> FSQVAE:
    """linear_path: on, as `fsqdeploy train` trains conv codecs, so every export test covers it."""
    cfg = ModelConfig(arch="conv", image_size=32, channels=channels, latent_dim=4,
                      levels=parse_levels("8,5,5,5", 4 * stages), stages=stages, temperature=0.1,
                      linear_path=linear_path)
    torch.manual_seed(0)
    model = FSQVAE(cfg).train()
    x = torch.from_numpy(images_to_float(load_images("sample", 64).train[:32]))
    with torch.no_grad():
        for _ in range(3):
            model(x)
    save_model(model.eval(), path, {"data": "sample"})
    return FSQVAE.load(path)
