"""The two FSQ autoencoders: the seed paper's FSQ-VAE (``arch="paper"``) and a fully convolutional
codec with a spatial latent (``arch="conv"``).

paper (section 2 of the seed paper): len(channels) x (Conv2d k4 s2 p1 -> BatchNorm -> ReLU), flatten,
Linear to ``latent_dim``; the decoder mirrors it with a Linear, ConvTranspose2d k4 s2 p1 + ReLU and a
last ConvTranspose2d to 3 channels. One D-vector per S x S image: it tiles on photos.

conv: len(channels) x (Conv2d k5 s2 p2 -> BatchNorm -> GDN), then Conv2d k3 to D channels and a
BatchNorm in front of the quantizer (without it the latent grows until tanh saturates and every
index is equal). FSQ runs over the channel axis at each of the H/f x W/f positions, f = 2 **
len(channels). The decoder mirrors it: Conv2d k3 and ConvTranspose2d k5 s2 p2 (output padding 1:
exactly 2x), each followed by an inverse GDN but the last. With ``linear_path`` (the conv default
for training) a Conv2d k = stride = f from the pixels is added to the latent before its BatchNorm,
and a ConvTranspose2d k = stride = f from the codes is added to the decoder's logits: each cell's
pixels reach its latent vector, and the vector its pixels, through one linear map beside the deep
path. Why (docs/training.md, "The linear path"): without it the codec often learnt only one of
the two chroma axes in the first few hundred steps and never recovered (held-out photos came back
with red turned green, on two of three seeds); with it colour is there from the first evaluation,
on every seed tried, and the held-out PSNR at a given step is higher. Its kernels do not overlap,
so it sees no padding and widens no receptive field.
No layer sees the image size, so any H, W that are multiples of f encode.

Both decoders return logits; the images are their sigmoid (kept as logits in the training loss
for a numerically stable BCE).
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


class GDN(nn.Module):
    """Simplified generalized divisive normalization (Johnston et al. 2019, after Balle et al. 2016):
    ``y_c = x_c / (beta_c + sum_k gamma_ck |x_k|)``; the inverse (decoder side) multiplies instead.

    Chosen over ReLU by measurement: at equal steps on the sample crops it reached the same training
    MSE in about half the steps (docs/training.md). beta and gamma are kept positive through abs, so
    the exported graph is standard ops (Abs, Conv 1x1, Add, Div/Mul) with the abs folded away.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = nn.functional.conv2d(x.abs(), self.gamma.abs(), self.beta.abs() + 1e-6)
        return x * norm if self.inverse else x / norm


class ConvEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 5, 2, 2), nn.BatchNorm2d(c), GDN(c)]
            c_in = c
        layers += [nn.Conv2d(c_in, cfg.latent_dim, 3, 1, 1), nn.BatchNorm2d(cfg.latent_dim)]
        self.features = nn.Sequential(*layers)
        f = cfg.downsample
        self.linear = nn.Conv2d(3, cfg.latent_dim, f, f) if cfg.linear_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear is None:
            return self.features(x)
        # the latent BatchNorm (last) normalises the sum, so both paths share its scale
        return self.features[-1](self.features[:-1](x) + self.linear(x))


class ConvDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chans = list(cfg.channels[::-1])
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, chans[0], 3, 1, 1), GDN(chans[0], inverse=True)]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=1), GDN(c_out, inverse=True)]
        layers.append(nn.ConvTranspose2d(chans[-1], 3, 5, 2, 2, output_padding=1))
        self.deconv = nn.Sequential(*layers)
        f = cfg.downsample
        self.linear = nn.ConvTranspose2d(cfg.latent_dim, 3, f, f) if cfg.linear_path else None

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        logits = self.deconv(codes)
        return logits if self.linear is None else logits + self.linear(codes)


def to_vectors(grid: torch.Tensor) -> torch.Tensor:
    """[N, D, h, w] -> [N*h*w, D], position-major: FSQ then runs over the channel axis."""
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])


def to_grid(vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_vectors`` for a grid shaped like ``like`` ([N, *, h, w])."""
    n, _, h, w = like.shape
    return vectors.reshape(n, h, w, vectors.shape[1]).permute(0, 3, 1, 2)


@dataclass
class VAEOutput:
    logits: torch.Tensor  # [N, 3, H, W]; sigmoid gives the reconstruction
    latent: torch.Tensor  # z, [N, latent_dim] (paper) or [N, latent_dim, h, w] (conv)
    decoder_input: torch.Tensor  # weighted stage codes, shaped like ``latent``
    stages: list[FSQOutput]  # per stage, over vectors [M, D]; M = N (paper) or N*h*w (conv)

    @property
    def indices(self) -> torch.Tensor:
        flat = torch.cat([s.indices for s in self.stages], dim=1)
        return to_grid(flat, self.latent) if self.latent.dim() == 4 else flat


class FSQVAE(nn.Module):
    """``FSQVAE.load(RUN)``; ``encode(images) -> indices``; ``decode(indices) -> images``."""

    def __init__(self, cfg: ModelConfig, ema_decay: float = 0.99):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder: nn.Module = ConvEncoder(cfg) if cfg.spatial else Encoder(cfg)
        self.quantizer = ResidualFSQ(cfg.levels, cfg.stages, cfg.eps, ema_decay)
        self.quantizer.set_temperature(cfg.temperature)
        self.decoder: nn.Module = ConvDecoder(cfg) if cfg.spatial else Decoder(cfg)

    # -- training -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> VAEOutput:
        z = self.encoder(images)
        if not self.config.spatial:
            mixed, stages = self.quantizer(z)
            return VAEOutput(self.decoder(mixed), z, mixed, stages)
        # The quantizer runs in FP32 even under mixed precision: its bound and rounding decide indices.
        with torch.autocast(device_type=z.device.type, enabled=False):
            mixed_vectors, stages = self.quantizer(to_vectors(z).float())
        mixed = to_grid(mixed_vectors, z)
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
        """Float images in [0, 1] -> int64 indices, index d in [0, L_d): [N, 3, S, S] -> [N, D]
        (paper), or [N, 3, H, W] -> [N, D, H/f, W/f] for any H, W that are multiples of f (conv)."""
        x = self._check_images(images)
        z = self.encoder(x)
        if not self.config.spatial:
            return self.quantizer.indices(z)
        return to_grid(self.quantizer.indices(to_vectors(z)), z)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Integer indices -> float images in [0, 1]: [N, D] -> [N, 3, S, S] (paper), or
        [N, D, h, w] -> [N, 3, h*f, w*f] (conv)."""
        idx = self._check_indices(indices)
        if not self.config.spatial:
            return torch.sigmoid(self.decoder(self.quantizer.indices_to_decoder_input(idx)))
        codes = to_grid(self.quantizer.indices_to_decoder_input(to_vectors(idx)), idx)
        return torch.sigmoid(self.decoder(codes))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        cfg = self.config
        if cfg.spatial:
            check_images(x, None, "encode", multiple_of=cfg.downsample)
        else:
            check_images(x, cfg.image_size, "encode")
        return x.to(self._device(), torch.float32)

    def _check_indices(self, indices: torch.Tensor | np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(np.asarray(indices)) if not isinstance(indices, torch.Tensor) else indices
        check_indices(idx, self.levels, "decode", spatial=self.config.spatial)
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
