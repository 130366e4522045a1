"""A small FSQ-VAE trained briefly on the sample photos, exported once per session.

INT8 targets on a random-init model say nothing (its latents are not where a trained model puts
them), so these tests train one: 32 px, channels 8,16,32,32, 16 latent dimensions of 8 levels,
120 Adam steps of 64 images with the trainer's exponential temperature schedule from 1.0 down to
the inference temperature 0.1: ~17.8 dB on the test split, a few seconds of training on two cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fsqdeploy.checkpoint import save_model
from fsqdeploy.config import ModelConfig
from fsqdeploy.data import load_images
from fsqdeploy.export.pipeline import export_artifact
from fsqdeploy.images import images_to_float
from fsqdeploy.model import FSQVAE
from fsqdeploy.train.losses import fsq_vae_loss
from fsqdeploy.train.schedules import temperature_at

STEPS, BATCH = 120, 64


def train_small(run: Path) -> None:
    torch.manual_seed(0)
    model = FSQVAE(ModelConfig(image_size=32, channels=(8, 16, 32, 32), latent_dim=16, levels=[8] * 16,
                               temperature=0.1)).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    images = load_images("sample", 32).train
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        temperature = temperature_at(step / STEPS, 1.0, 0.1, "exponential")
        model.quantizer.set_temperature(temperature)
        x = torch.from_numpy(images_to_float(images[rng.choice(len(images), BATCH, replace=False)]))
        out = model(x)
        loss = fsq_vae_loss(out.logits, x, list(model.quantizer.stages), out.stages, temperature).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.quantizer.set_temperature(0.1)
    save_model(model.eval(), run, {"data": "sample"})


@pytest.fixture(scope="session")
def trained_art(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("int8")
    train_small(root / "run")
    export_artifact(root / "run", root / "art", opset=18, parity_images=64)
    return root / "art"


@pytest.fixture
def art_int8(tmp_path, trained_art) -> Path:
    """A private copy of the trained artifact, for tests that calibrate or damage it."""
    dst = tmp_path / "art"
    shutil.copytree(trained_art, dst)
    return dst


@pytest.fixture(scope="session")
def calibrated_copy(tmp_path_factory, trained_art):
    """calibrated_copy(method): a copy of the trained artifact calibrated with ``method`` on 256 samples."""
    from fsqdeploy.calibration.pipeline import calibrate_artifact

    def make(method: str) -> Path:
        art = tmp_path_factory.mktemp(f"calibrated-{method}") / "art"
        shutil.copytree(trained_art, art)
        calibrate_artifact(art, method=method, samples=256)
        return art

    return make
