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
exactly the crops an uninterrupted one would. The draws need only the photos' sizes (``plan_crops``),
so a streamed folder (``fsqdeploy.data.FolderPhotos``, sizes from the file headers) gets the very
crops its in-memory copy would, cut by decoding threads that decode one photo per crop
(``streamed_crops``). Several processes (torchrun) draw the same global batch and each cuts its
slice (``keep``), so together they train on the crops one process with the whole batch would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fsqdeploy.data import FolderPhotos, load_batches

TINTED = 0.5  # the fraction of crops given a random per-channel contrast and offset


@dataclass(frozen=True)
class Crop:
    """One planned crop: the square [y, y + side) x [x, x + side) of photo ``photo``, resized to
    ``size``, then flipped and its channels put in ``order``."""

    photo: int
    y: int
    x: int
    side: int
    size: int
    flip: bool
    order: tuple[int, int, int]


def plan_crops(shapes: Sequence[tuple[int, int]], count: int, size: int, seed: int, step: int,
               min_scale: float = 0.5) -> list[Crop]:
    """Step ``step``'s ``count`` crops of photos whose (H, W) are ``shapes``: every draw comes from
    ``default_rng([seed, step])`` in a fixed order, so the plan depends on nothing else."""
    rng = np.random.default_rng([seed, step])
    plan = []
    for _ in range(count):
        photo = int(rng.integers(len(shapes)))
        h, w = shapes[photo]
        side = min(int(size / rng.uniform(min_scale, 1.0)), h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        flip = bool(rng.random() < 0.5)
        plan.append(Crop(photo, y, x, side, size, flip, tuple(int(c) for c in rng.permutation(3))))  # type: ignore[arg-type]
    return plan


def cut(photo: np.ndarray, crop: Crop) -> torch.Tensor:
    """float32 [3, size, size] in [0, 1]: ``crop`` of a uint8 [H, W, 3] photo."""
    # a copy (uint8, small): a crop as wide as a read-only photo is a read-only view, which torch warns about
    region = torch.from_numpy(np.array(photo[crop.y : crop.y + crop.side, crop.x : crop.x + crop.side]))
    out = region.permute(2, 0, 1)[None].float() / 255.0
    if crop.side != crop.size:
        out = F.interpolate(out, size=(crop.size, crop.size), mode="bilinear", antialias=True, align_corners=False)
    out = out[0]
    if crop.flip:
        out = out.flip(-1)
    return out[torch.tensor(crop.order)]


def random_crops(photos: Sequence[np.ndarray], count: int, size: int, seed: int, step: int,
                 min_scale: float = 0.5, keep: slice = slice(None)) -> torch.Tensor:
    """float32 [k, 3, size, size] in [0, 1] from uint8 [H, W, 3] photos (each at least ``size``): the
    ``keep`` slice of step ``step``'s ``count`` crops (all of them by default)."""
    plan = plan_crops([p.shape[:2] for p in photos], count, size, seed, step, min_scale)
    crops = torch.stack([cut(photos[c.photo], c) for c in plan[keep]])
    return tint(crops.clamp_(0.0, 1.0), seed, step, count, keep)


def tint(crops: torch.Tensor, seed: int, step: int, count: int | None = None,
         keep: slice = slice(None)) -> torch.Tensor:
    """About TINTED of the crops [N, 3, S, S] in [0, 1], each channel mapped to ``b + a * x``; the
    draws depend only on (seed, step) and the step's crop count (``count``; default: all are here),
    as the crops' do, and ``crops`` are the ``keep`` slice of them."""
    g = torch.Generator().manual_seed(seed * 1000003 + step)
    n = crops.shape[0] if count is None else count
    contrast = (torch.rand(n, 3, 1, 1, generator=g) * 0.8 + 0.4).clamp(max=1.0)
    offset = torch.rand(n, 3, 1, 1, generator=g) * (1 - contrast)
    kept = (torch.rand(n, 1, 1, 1, generator=g) < 1 - TINTED).float()
    contrast, offset, kept = contrast[keep], offset[keep], kept[keep]
    return (kept * crops + (1 - kept) * (offset + contrast * crops)).clamp_(0.0, 1.0)


class _CropSource:
    """A dataset indexed by Crop: decodes its photo (one file) and cuts it."""

    def __init__(self, photos: FolderPhotos) -> None:
        self.photos = photos

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, crop: Crop) -> torch.Tensor:
        return cut(self.photos[crop.photo], crop).clamp_(0.0, 1.0)


def streamed_crops(photos: FolderPhotos, count: int, size: int, seed: int, first_step: int, last_step: int,
                   workers: int, keep: slice = slice(None), min_scale: float = 0.5) -> Iterator[torch.Tensor]:
    """The batches ``random_crops`` gives for steps first_step..last_step - 1 (the same crops, the same
    tint), cut from files by ``workers`` decoding threads that decode one photo per crop."""
    plans = (plan_crops(photos.shapes, count, size, seed, step, min_scale)[keep]
             for step in range(first_step, last_step))
    for step, crops in zip(range(first_step, last_step),
                           load_batches(_CropSource(photos), plans, workers, torch.stack)):
        yield tint(crops, seed, step, count, keep)  # type: ignore[arg-type]
