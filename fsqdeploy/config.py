"""Config dataclasses: everything needed to rebuild a model, and everything a training run used.

A run's config.json holds the model fields at the top level (``levels`` is always the final list,
one level count per index position) and the training fields under ``"training"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import read_format_json

CHECKPOINT_FORMAT = "fsqdeploy-checkpoint"
CONFIG_FILE = "config.json"  # RUN/config.json and ART/checkpoint/config.json
CHECKPOINT_VERSION = 1


ARCHS = ("paper", "conv")  # paper: the seed's FSQ-VAE; conv: fully convolutional, spatial latent


@dataclass
class ModelConfig:
    """``arch="paper"``: one D-vector per S x S image (the seed paper). ``arch="conv"``: a latent grid
    [D, H/f, W/f] with f = 2 ** len(channels); ``image_size`` is then only the training crop side and
    any H, W that are multiples of f encode."""

    arch: str = "paper"
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 256)
    latent_dim: int = 64
    levels: list[int] = field(default_factory=lambda: [8] * 64)  # stages * latent_dim entries
    stages: int = 1
    temperature: float = 1.0  # the quantizer's temperature; a finished run stores its final value
    eps: float = 1e-3
    # conv: a linear path from each f x f cell's pixels to its latent vector and back, beside the deep
    # one (fsqdeploy/model.py says why). False in configs written before it existed.
    linear_path: bool = False

    @property
    def spatial(self) -> bool:
        """True when indices form a grid [N, D, h, w] rather than one vector [N, D] per image."""
        return self.arch == "conv"

    @property
    def downsample(self) -> int:
        """Pixels per latent position along each axis (conv), or the patch side's divisor (paper)."""
        return 2 ** len(self.channels)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise FSQDeployError(f"model: unknown architecture {self.arch!r}. Note: use one of {', '.join(ARCHS)}")
        down = self.downsample
        if not self.channels:
            raise FSQDeployError("model: --channels needs at least one stride-2 layer")
        if self.image_size <= 0 or self.image_size % down:
            raise FSQDeployError(
                f"model: image size {self.image_size} is not a positive multiple of {down} "
                f"({len(self.channels)} stride-2 layers)"
            )
        if self.latent_dim <= 0 or any(c <= 0 for c in self.channels):
            raise FSQDeployError("model: latent size and channels must be positive")
        if self.stages < 1:
            raise FSQDeployError(f"model: --stages must be at least 1, got {self.stages}")
        if len(self.levels) != self.stages * self.latent_dim:
            raise FSQDeployError(
                f"model: {len(self.levels)} levels do not match {self.stages} stage(s) x latent {self.latent_dim}"
            )
        if not self.temperature > 0:
            raise FSQDeployError(f"model: temperature must be positive, got {self.temperature}")
        if self.linear_path and not self.spatial:
            raise FSQDeployError("model: the linear path is for the conv architecture only")


@dataclass
class TrainConfig:
    data: str = "sample"
    download: bool = False
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    recon_loss: str = "bce"  # "bce" (paper) or "mse"
    recon_weight: float = 1.0
    quant_weight: float = 1.0
    entropy_weight: float = 0.1
    rate_weight: float = 0.0  # weight of the rate term in bits per pixel (train/losses.py); 0: off
    rate_from: float = 0.5  # the rate term acts from this fraction of the run on (docs/training.md: why)
    ema_decay: float = 0.99
    temperature_schedule: str = "exponential"  # exponential | linear | cosine | constant
    temperature_start: float = 1.0
    temperature_end: float = 0.1
    adaptive_levels: bool = False
    adapt_epochs: list[int] = field(default_factory=list)  # empty: at 20% and 40% of the run
    eval_batches: int = 0  # 0: the whole test split
    # conv: a budget of steps, or of minutes (whichever ends first; 0 = none), evaluated every
    # eval_every steps (0: ten times per run); amp: bfloat16 autocast where GPU or CPU has it, quantizer FP32
    steps: int = 0
    minutes: float = 0.0
    eval_every: int = 0
    amp: bool = True
    sync_bn: bool = False  # distributed runs (torchrun): SyncBatchNorm across the ranks (CUDA only)
    workers: int = 2  # folder:DIR streams from disk through this many decoding threads (0: in-process)


def model_config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["channels"] = list(cfg.channels)
    return d


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    # configs written before ``arch`` are the paper model, before ``linear_path`` a model without one
    missing = names - {"eps", "arch", "linear_path"} - set(d)
    if missing:
        raise FSQDeployError(f"checkpoint: config.json lacks {sorted(missing)}")
    try:
        cfg = ModelConfig(**{k: d[k] for k in names if k in d})
        cfg.arch = str(cfg.arch)
        cfg.channels = tuple(int(c) for c in cfg.channels)
        cfg.levels = [int(v) for v in cfg.levels]
        cfg.image_size, cfg.latent_dim, cfg.stages = int(cfg.image_size), int(cfg.latent_dim), int(cfg.stages)
        cfg.temperature = float(cfg.temperature)
        if not isinstance(cfg.linear_path, bool):
            raise TypeError(f"linear_path must be true or false, got {cfg.linear_path!r}")
    except (TypeError, ValueError) as e:
        raise FSQDeployError(f"checkpoint: config.json has a malformed model field ({e})") from None
    cfg.validate()
    return cfg


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read RUN/config.json with clear errors for a missing or corrupt file."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise FSQDeployError(f"checkpoint: run directory '{run_dir}' does not exist")
    return read_format_json(path, component="checkpoint", fmt=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                            describes="an fsqdeploy checkpoint config",
                            missing_note=f"is '{run_dir}' a training run directory?")


def tile_halos(cfg: ModelConfig) -> tuple[int, int]:
    """(encoder halo in pixels, decoder halo in latent cells) for tiled whole-image coding of a conv
    model: a tile widened by its halo on every side gives core outputs that depend only on real
    pixels (or cells), so tiles stitch into exactly what one pass computes.

    Encoder: n layers of k5 s2 (radius 2 at jump 2^i) and a k3 s1 (radius 1 at jump 2^n) reach
    r = 3 * 2^n - 2 pixels; rounded up to whole cells of f = 2^n pixels that is 3f. Decoder: the k3
    conv reaches 1 cell and each k5 s2 transposed conv 1 input pixel at its own scale, 2.75 cells
    for n = 3 and under 3 for any n; one more cell for margin gives 4. The linear path (k = s = f)
    sees only its own cell, so it widens neither.
    """
    if not cfg.spatial:
        raise FSQDeployError("model: tiling halos apply to the conv architecture only")
    return 3 * cfg.downsample, 4
