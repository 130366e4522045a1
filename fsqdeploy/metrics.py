"""One definition of each number every stage reports: rate (bits), PSNR and SSIM.

Rate:
- ``code_bits(levels)``: sum of log2 L_d, the information content of one index vector (a float;
  adaptive levels budget against it).
- ``fixed_bits(levels)``: ceil(log2 prod L_d), exact on integers: what the mixed-radix bitstream
  spends per patch, and what training, eval and bench report as ``bits_per_image``.

PSNR (dB, capped at ``PSNR_CAP`` for identical images) is per image: ``psnr`` returns one value an
image and every report averages those values (``mean_psnr``). SSIM follows scikit-image's defaults.
Importing this module does not import torch; ``psnr``/``ssim`` take torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PSNR_CAP = 100.0  # the PSNR of two identical images: 10 log10(1 / 1e-10)
_MSE_FLOOR = 10 ** (-PSNR_CAP / 10)


def code_bits(levels: Sequence[int]) -> float:
    """sum log2 L_d: the bits one index vector carries (before rounding up to whole bits)."""
    return float(sum(math.log2(int(v)) for v in levels))


def fixed_bits(levels: Sequence[int]) -> int:
    """ceil(log2(prod L_d)), exact on ints: the fixed-rate bits of one packed index vector."""
    return (math.prod(int(v) for v in levels) - 1).bit_length()


def _torch(x: Any) -> torch.Tensor:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def psnr(a: Any, b: Any, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of two [N, C, H, W] batches (capped at PSNR_CAP for identical images)."""
    import torch

    a, b = _torch(a), _torch(b)
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(_MSE_FLOOR * data_range**2))).float()


def mean_psnr(a: Any, b: Any, data_range: float = 1.0) -> float:
    """The mean of the per-image PSNRs: the one PSNR every report quotes for a set of images."""
    # Averaged in float64, as calibration's recorded PSNRs always were.
    return float(psnr(a, b, data_range).double().numpy().mean()) if len(a) else PSNR_CAP


SSIM_WINDOW = 7


def ssim(a: Any, b: Any, data_range: float = 1.0, win: int = SSIM_WINDOW) -> torch.Tensor:
    """Per-image SSIM, matching skimage.metrics.structural_similarity's defaults
    (7x7 uniform window, K1=0.01, K2=0.03, sample covariance, mean over channels and the valid
    interior), but batched in torch so it costs nothing per epoch."""
    import torch.nn.functional as F

    a, b = _torch(a).double(), _torch(b).double()
    if min(a.shape[-2:]) < win:
        raise ValueError(f"SSIM's {win}x{win} window needs images of at least {win} px a side, got "
                         f"{a.shape[-1]}x{a.shape[-2]}")

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
