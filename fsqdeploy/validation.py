"""Boundary checks for images and indices, shared by the PyTorch model and the runtime Codec.

They accept numpy arrays and torch tensors alike, so every entry point says the same thing about
the same mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fsqdeploy.errors import FSQDeployError


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _kind(x: Any) -> str:
    """numpy dtype kind: 'f' float, 'i'/'u' integer, 'b' bool, 'c' complex."""
    if _is_torch(x):
        if x.is_floating_point():
            return "f"
        if x.is_complex():
            return "c"
        return "b" if str(x.dtype) == "torch.bool" else "i"
    return np.asarray(x).dtype.kind


def check_images(images: Any, image_size: int | None, component: str = "encode", *,
                 multiple_of: int | None = None) -> None:
    """Float [N, 3, S, S] (or [N, 3, H, W] with H, W positive multiples of ``multiple_of`` when
    ``image_size`` is None), finite, in [0, 1]."""
    shape = list(images.shape)
    s = image_size
    if s is None:
        f = multiple_of or 1
        if len(shape) != 4 or shape[1] != 3:
            raise FSQDeployError(f"{component}: images must have shape [N, 3, H, W], got {shape}")
        if shape[2] < f or shape[3] < f or shape[2] % f or shape[3] % f:
            raise FSQDeployError(f"{component}: image height and width must be positive multiples of {f}, "
                                 f"got {shape[2]}x{shape[3]}. Note: pad the image (fsqdeploy compress does)")
    elif len(shape) != 4 or shape[1] != 3 or shape[2] != s or shape[3] != s:
        raise FSQDeployError(f"{component}: images must have shape [N, 3, {s}, {s}], got {shape}")
    if _kind(images) != "f":
        raise FSQDeployError(f"{component}: images must be floating point in [0, 1], got {images.dtype}")
    if shape[0] == 0:
        return
    xp = __import__("torch") if _is_torch(images) else np
    if not bool(xp.isfinite(images).all()):
        raise FSQDeployError(f"{component}: images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise FSQDeployError(f"{component}: pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")


def check_indices(indices: Any, levels: Sequence[int], component: str = "decode", *, spatial: bool = False) -> None:
    """Integer [N, D] (or a grid [N, D, h, w] when ``spatial``) with index d in [0, L_d)."""
    shape = list(indices.shape)
    width = len(levels)
    if spatial:
        if len(shape) != 4 or shape[1] != width or shape[2] < 1 or shape[3] < 1:
            raise FSQDeployError(f"{component}: indices must have shape [N, {width}, h, w], got {shape}")
    elif len(shape) != 2 or shape[1] != width:
        raise FSQDeployError(f"{component}: indices must have shape [N, {width}], got {shape}")
    if _kind(indices) not in "iu":
        raise FSQDeployError(f"{component}: indices must be integers, got {indices.dtype}")
    if shape[0] == 0:
        return
    idx = indices.detach().cpu().numpy() if _is_torch(indices) else np.asarray(indices)
    limit = np.asarray(levels).reshape(-1, 1, 1) if spatial else np.asarray(levels)
    bad = (idx < 0) | (idx >= limit)
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise FSQDeployError(f"{component}: index {int(idx[where])} at {list(where)} is outside "
                             f"[0, {levels[where[1]]})")
