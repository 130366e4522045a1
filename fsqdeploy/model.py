"""The FSQ-VAE of the paper (section 2): conv encoder, FSQ, transposed-conv decoder.

Encoder: len(channels) x (Conv2d k4 s2 p1 -> BatchNorm -> ReLU), flatten, Linear to ``latent_dim``.
Decoder: Linear to [channels[-1], S/16, S/16], ConvTranspose2d k4 s2 p1 + ReLU back through the
channels, a last ConvTranspose2d to 3 channels and a sigmoid (kept as logits inside the training
loss for a numerically stable BCE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fsqdeploy.config import ModelConfig, model_config_from_dict, read_config
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import FSQOutput, ResidualFSQ
from fsqdeploy.validation import check_images, check_indices

WEIGHTS_FILE = "model.safetensors"


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(cfg.channels)
        self.fc = nn.Linear(c_in * side * side, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hidden = cfg.channels[-1]
        self.side = cfg.image_size // 2 ** len(cfg.channels)
        self.fc = nn.Linear(cfg.latent_dim, self.hidden * self.side * self.side)
        layers: list[nn.Module] = []
        chans = list(cfg.channels[::-1])
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.ReLU(inplace=True)]
        layers.append(nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Return logits; the images are their sigmoid."""
        x = self.fc(codes).view(-1, self.hidden, self.side, self.side)
        return self.deconv(x)


@dataclass
class VAEOutput:
    logits: torch.Tensor  # [N, 3, H, W]; sigmoid gives the reconstruction
    latent: torch.Tensor  # z, [N, latent_dim]
    decoder_input: torch.Tensor  # weighted stage codes, [N, latent_dim]
    stages: list[FSQOutput]

    @property
    def indices(self) -> torch.Tensor:
        return torch.cat([s.indices for s in self.stages], dim=1)


class FSQVAE(nn.Module):
    """``FSQVAE.load(RUN)``; ``encode(images) -> indices``; ``decode(indices) -> images``."""

    def __init__(self, cfg: ModelConfig, ema_decay: float = 0.99):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualFSQ(cfg.levels, cfg.stages, cfg.eps, ema_decay)
        self.quantizer.set_temperature(cfg.temperature)
        self.decoder = Decoder(cfg)

    # -- training -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> VAEOutput:
        z = self.encoder(images)
        mixed, stages = self.quantizer(z)
        return VAEOutput(self.decoder(mixed), z, mixed, stages)

    # -- inference API --------------------------------------------------------------------------
    @property
    def levels(self) -> list[int]:
        return self.quantizer.level_list()

    @property
    def code_width(self) -> int:
        return self.quantizer.code_width

    @torch.no_grad()
    def encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Float images [N, 3, S, S] in [0, 1] -> int64 indices [N, D], index d in [0, L_d)."""
        x = self._check_images(images)
        return self.quantizer.indices(self.encoder(x))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Integer indices [N, D] -> float images [N, 3, S, S] in [0, 1]."""
        idx = self._check_indices(indices)
        return torch.sigmoid(self.decoder(self.quantizer.indices_to_decoder_input(idx)))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        check_images(x, self.config.image_size, "encode")
        return x.to(self._device(), torch.float32)

    def _check_indices(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(np.asarray(indices)) if not isinstance(indices, torch.Tensor) else indices
        check_indices(idx, self.levels, "decode")
        return idx.to(self._device(), torch.int64)

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> FSQVAE:
        """Rebuild the model from RUN/config.json and RUN/model.safetensors, in eval mode."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        raw = read_config(run_dir)
        model = cls(model_config_from_dict(raw))
        path = Path(run_dir) / WEIGHTS_FILE
        if not path.is_file():
            raise FSQDeployError(f"checkpoint: '{path}' is missing")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
            raise FSQDeployError(f"checkpoint: '{path}' is corrupt ({str(e).splitlines()[0]})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise FSQDeployError(f"checkpoint: '{path}' does not match config.json ({first})") from None
        return model.to(device).eval()
