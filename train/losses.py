"""Training losses: reconstruction (BCE as in the paper, or MSE) and the FSQ loss of eq. 11.

Eq. 11 is ``(MSE(z, zq) + MSE(zq, z)) / T - 0.1 * EntropyRate``. Its two MSE terms are VQ-VAE's
codebook and commitment terms; FSQ has no codebook to learn, so only the commitment term carries a
gradient, and we use it once: the mean squared distance, in code units, between the bounded latent
and its rounded value, divided by the temperature. The entropy rate is the normalised entropy of
soft level usage over the batch (1 = every level used equally), so subtracting it spreads usage.

The rate term (``rate_weight``, off by default) is the other direction: the same soft usage's
entropy in bits, summed over dimensions and stages and divided by the pixels one code vector covers
(f^2 for conv, S^2 for paper), so ``recon + rate_weight * rate`` is a rate-distortion Lagrangian in
bits per pixel and one knob trades bytes for PSNR. It estimates a marginal (per-channel) coder's
rate; the context-conditioned coder of the .fsq payload spends less, but a lower marginal entropy
lowers it too (docs/training.md has the measured points). ``rate_weight_at`` switches it on only
from ``rate_from`` of the run on: on from the first step, it made the conv codec drop colour (the
cheapest bits to save) in 3 of 3 runs; from half-way on, colour was already learnt and kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsqdeploy.fsq import FSQ, FSQOutput


@dataclass
class LossTerms:
    total: torch.Tensor
    recon: torch.Tensor
    quant: torch.Tensor  # the commitment part of eq. 11, already divided by T
    entropy_rate: torch.Tensor
    rate_bpp: torch.Tensor  # the rate term's estimate, bits per pixel (computed only when weighted)


def reconstruction_loss(logits: torch.Tensor, images: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":  # on logits: the same value as BCE(sigmoid(logits)), without its log(0) issues
        return F.binary_cross_entropy_with_logits(logits, images)
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(logits), images)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def commitment(stage: FSQ, out: FSQOutput) -> torch.Tensor:
    """Mean squared distance between the bounded latent and its level, in code units."""
    hw = stage.half_width
    return F.mse_loss(out.bounded / hw, torch.round(out.bounded).detach() / hw)


def usage_entropy(stage: FSQ, out: FSQOutput, sharpness: float = 1.0) -> torch.Tensor:
    """[D] entropy in nats of each dimension's soft level usage over the batch: every bounded value
    spread over the levels by a softmax of minus its squared distance to them."""
    levels = stage.levels
    width = int(levels.max())
    integers = torch.arange(width, device=levels.device) - (levels // 2).unsqueeze(1)  # [D, Lmax]
    dist = (out.bounded.unsqueeze(-1) - integers) ** 2  # [N, D, Lmax]
    valid = torch.arange(width, device=levels.device) < levels.unsqueeze(1)
    logits = (-dist / sharpness).masked_fill(~valid, float("-inf"))
    usage = torch.softmax(logits, dim=-1).mean(0)  # [D, Lmax]
    return -(usage * torch.log(usage.clamp_min(1e-12))).sum(-1)


def entropy_rate(stage: FSQ, out: FSQOutput, sharpness: float = 1.0) -> torch.Tensor:
    """Normalised entropy of the batch's soft level usage, averaged over dimensions, in [0, 1]."""
    entropy = usage_entropy(stage, out, sharpness)
    return (entropy / torch.log(stage.levels.to(entropy.dtype))).mean()


def rate_bits(stage: FSQ, out: FSQOutput, sharpness: float = 1.0) -> torch.Tensor:
    """Bits per code vector a marginal coder would spend on this stage: the usage entropies' sum."""
    return usage_entropy(stage, out, sharpness).sum() / math.log(2.0)


def rate_weight_at(progress: float, weight: float, start: float) -> float:
    """The rate term's weight at ``progress`` in [0, 1] of the run: 0 before ``start``."""
    return weight if progress >= start else 0.0


def fsq_vae_loss(
    logits: torch.Tensor,
    images: torch.Tensor,
    stages: list[FSQ],
    outputs: list[FSQOutput],
    temperature: float,
    recon_kind: str = "bce",
    recon_weight: float = 1.0,
    quant_weight: float = 1.0,
    entropy_weight: float = 0.1,
    rate_weight: float = 0.0,
    pixels_per_code: int = 1,
) -> LossTerms:
    recon = reconstruction_loss(logits, images, recon_kind)
    quant = sum(commitment(s, o) for s, o in zip(stages, outputs)) / temperature
    rate = sum(entropy_rate(s, o) for s, o in zip(stages, outputs)) / len(stages)
    total = recon_weight * recon
    if quant_weight:  # a weight of 0 turns the term off entirely (no wasted graph)
        total = total + quant_weight * quant
    if entropy_weight:
        total = total - entropy_weight * rate
    bpp = torch.zeros(())
    if rate_weight:
        bpp = sum(rate_bits(s, o) for s, o in zip(stages, outputs)) / pixels_per_code
        total = total + rate_weight * bpp
    return LossTerms(total, recon.detach(), torch.as_tensor(quant).detach(), torch.as_tensor(rate).detach(),
                     torch.as_tensor(bpp).detach())
