"""Training crops for the conv codec: random scale, position, flip, colour order and tint, from whole photos.

Seven or twelve photographs are too few to learn from as they are: the codec would learn their
palettes. Each crop is a random square region of side ``size / s`` (``s`` uniform in
[min_scale, 1], capped by the photo), resized to ``size`` with an antialiased bilinear filter (a
convex combination of pixels, so values stay in [0, 1]), flipped left-right half the time, with its
colour channels in a random order (6 orders): the crops teach local statistics (edges, textures,
gradients) rather than which colours the training photos happen to have.

Half the crops are also tinted: each channel c becomes ``b_c + a_c * x_c`` with a contrast ``a_c =
min(1, U(0.4, 1.2))`` and an offset ``b_c`` uniform in [0, 1 - a_c], so values stay in [0, 1].
Seven of the twelve sample photos are greyscale, so without it most crops carry no colour at all,
and the f = 16 codec (22 bits per 16 x 16 cell) learnt to spend nothing on chroma: held-out photos
came back with casts of 30-60 grey levels. The tint made the default run learn colour; it lowers
that risk, it does not remove it (another seed still fell into it: docs/training.md).

Every crop of step ``k`` comes from ``numpy.random.default_rng([seed, k])``: a resumed run draws
exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

TINTED = 0.5  # the fraction of crops given a random per-channel contrast and offset


def random_crops(photos: Sequence[np.ndarray], count: int, size: int, seed: int, step: int,
                 min_scale: float = 0.5) -> torch.Tensor:
    """float32 [count, 3, size, size] in [0, 1] from uint8 [H, W, 3] photos (each at least ``size``)."""
    rng = np.random.default_rng([seed, step])
    crops = []
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = min(int(size / rng.uniform(min_scale, 1.0)), h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        region = torch.from_numpy(np.ascontiguousarray(photo[y : y + side, x : x + side])).permute(2, 0, 1)
        crop = region[None].float() / 255.0
        if side != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crop = crop[0]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        crops.append(crop[torch.from_numpy(rng.permutation(3))])
    return tint(torch.stack(crops).clamp_(0.0, 1.0), seed, step)


def tint(crops: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """About TINTED of the crops [N, 3, S, S] in [0, 1], each channel mapped to ``b + a * x``; the
    draws depend only on (seed, step), as the crops' do."""
    g = torch.Generator().manual_seed(seed * 1000003 + step)
    n = crops.shape[0]
    contrast = (torch.rand(n, 3, 1, 1, generator=g) * 0.8 + 0.4).clamp(max=1.0)
    offset = torch.rand(n, 3, 1, 1, generator=g) * (1 - contrast)
    kept = (torch.rand(n, 1, 1, 1, generator=g) < 1 - TINTED).float()
    return (kept * crops + (1 - kept) * (offset + contrast * crops)).clamp_(0.0, 1.0)
