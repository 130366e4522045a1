"""Code statistics (codebook usage, perplexity, entropy) and FID; PSNR, SSIM and rate live in fsqdeploy.metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fsq import FSQ
from fsqdeploy.metrics import fixed_bits


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
    levels_all: list[int] = []
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
        levels_all += stage.level_list()
    alive = total - dead
    return CodeStats(
        usage=alive / total if total else 0.0,
        perplexity=float(np.mean(perplexities)) if perplexities else 0.0,
        dead_levels=dead,
        entropy_bits=entropy_bits,
        fixed_bits=fixed_bits(levels_all),
    )


def index_stats(indices: np.ndarray, levels: Sequence[int], dead_share: float = 1e-3) -> dict[str, float | int]:
    """The code statistics of actual indices [n, W] (W = len(levels): the cells of the images ``eval``
    codes), as ``code_stats`` defines them from training's EMA counts: ``codebook_usage`` (share of
    (dimension, level) slots holding at least ``dead_share`` of their dimension's cells),
    ``perplexity`` (mean over dimensions of exp(entropy), in levels), ``dead_levels`` and
    ``entropy_bits`` (the sum of the dimensions' entropies). Over whole cells, the codec's tokens
    (docs/tokens.md): ``tokens_in_use``, the distinct code vectors, and ``token_perplexity``, exp of
    their entropy."""
    idx = np.asarray(indices).reshape(-1, len(levels))
    alive = dead = 0
    perplexities, entropy_bits = [], 0.0
    for d, level in enumerate(levels):
        p = np.bincount(idx[:, d], minlength=level)[:level] / max(len(idx), 1)
        dead_here = int((p < dead_share).sum())
        dead, alive = dead + dead_here, alive + level - dead_here
        ent = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        perplexities.append(math.exp(ent))
        entropy_bits += ent / math.log(2)
    _, counts = np.unique(idx, axis=0, return_counts=True)
    q = counts / max(len(idx), 1)
    return {"codebook_usage": alive / max(alive + dead, 1), "perplexity": float(np.mean(perplexities)),
            "dead_levels": dead, "entropy_bits": entropy_bits, "tokens_in_use": int(len(counts)),
            "token_perplexity": float(math.exp(-(q * np.log(q)).sum()))}


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
