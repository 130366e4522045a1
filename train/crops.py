"""Training crops for the conv codec: random scale, position, flip and colour order, from whole photos.

Seven or twelve photographs are too few to learn from as they are: the codec would learn their
palettes. Each crop is a random square region of side ``size / s`` (``s`` uniform in
[min_scale, 1], capped by the photo), resized to ``size`` with an antialiased bilinear filter (a
convex combination of pixels, so values stay in [0, 1]), flipped left-right half the time, with its
colour channels in a random order (6 orders): the crops teach local statistics (edges, textures,
gradients) rather than which colours the training photos happen to have.

Every crop of step ``k`` comes from ``numpy.random.default_rng([seed, k])``: a resumed run draws
exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


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
    return torch.stack(crops).clamp_(0.0, 1.0)
