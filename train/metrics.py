"""Image and code metrics: PSNR, SSIM, codebook usage and perplexity, FID."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import FSQ


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of two [N, C, H, W] batches (capped at 100 dB for identical images)."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))).float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win: int = 7) -> torch.Tensor:
    """Per-image SSIM, matching skimage.metrics.structural_similarity's defaults
    (7x7 uniform window, K1=0.01, K2=0.03, sample covariance, mean over channels and the valid
    interior), but batched in torch so it costs nothing per epoch."""
    a, b = a.double(), b.double()

    def filt(x: torch.Tensor) -> torch.Tensor:  # the uniform window mean: avg_pool is ~13x faster than conv2d
        return F.avg_pool2d(x, win, stride=1)

    n = win * win
    cov_norm = n / (n - 1)
    ux, uy = filt(a), filt(b)
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


@dataclass
class CodeStats:
    usage: float  # share of (dimension, level) slots that are alive
    perplexity: float  # mean over dimensions of exp(entropy of level usage), in levels
    dead_levels: int
    entropy_bits: float  # sum over dimensions of the usage entropy: what an entropy coder needs
    fixed_bits: int  # ceil(sum log2 L_d): what the mixed-radix bitstream spends per image


def code_stats(stages: list[FSQ], dead_share: float = 1e-3) -> CodeStats:
    """Statistics from the EMA level counts (paper eqs. 8-10). A level is dead when it receives
    less than ``dead_share`` of its dimension's assignments."""
    alive = total = dead = 0
    perplexities: list[float] = []
    entropy_bits = 0.0
    fixed = 0.0
    for stage in stages:
        counts = stage.ema_counts.double()
        levels = stage.levels
        valid = torch.arange(counts.shape[1], device=counts.device) < levels.unsqueeze(1)
        p = counts / counts.sum(1, keepdim=True).clamp_min(1e-12)
        is_dead = (p < dead_share) & valid
        dead += int(is_dead.sum())
        total += int(valid.sum())
        ent = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
        perplexities += torch.exp(ent).tolist()
        entropy_bits += float(ent.sum()) / math.log(2)
        fixed += sum(math.log2(v) for v in stage.level_list())
    alive = total - dead
    return CodeStats(
        usage=alive / total if total else 0.0,
        perplexity=float(np.mean(perplexities)) if perplexities else 0.0,
        dead_levels=dead,
        entropy_bits=entropy_bits,
        fixed_bits=math.ceil(fixed - 1e-9),
    )


def load_feature_extractor(path: str | Path) -> torch.jit.ScriptModule:
    """A TorchScript Inception feature extractor from a local file, e.g. the
    ``inception-2015-12-05.pt`` used by clean-fid and StyleGAN's metrics (called with images in
    [0, 255] and ``return_features=True``). No weights are ever downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FSQDeployError(f"fid: inception weights '{path}' not found. Note: pass a local TorchScript file")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # torch raises several unrelated types for a bad archive
        raise FSQDeployError(f"fid: '{path}' is not a TorchScript module ({type(e).__name__})") from None


@torch.no_grad()
def inception_features(extractor: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    feats = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float() * 255.0
        try:
            f = extractor(x, return_features=True)
        except (RuntimeError, TypeError):
            f = extractor(x)
        feats.append(f.reshape(len(x), -1).double().cpu().numpy())
    return np.concatenate(feats)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets: |mu_a - mu_b|^2 + Tr(Sa + Sb - 2 sqrt(Sa Sb))."""
    from scipy import linalg

    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    sa, sb = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        offset = np.eye(sa.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sa + offset) @ (sb + offset))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))
