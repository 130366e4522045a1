"""Image files and pixel conversions, one definition each for every stage.

Pixels travel as uint8 [..., H, W, 3] on disk and as float32 [N, 3, H, W] in [0, 1] in the codec.
float -> uint8 rounds to nearest (``+0.5``), so uint8 -> float -> uint8 is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsqdeploy.errors import FSQDeployError


def read_image(path: str | Path, component: str = "compress") -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]; one clear error for anything that is not an image."""
    path = Path(path)
    if not path.is_file():
        raise FSQDeployError(f"{component}: '{path}' does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FSQDeployError(f"{component}: '{path}' is not a readable image ({type(e).__name__})") from None


def images_to_float(batch: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, S, S]`` -> float32 in [0, 1]. Refuses other dtypes: /255 twice is a silent bug."""
    if batch.dtype != np.uint8:
        raise TypeError(f"images_to_float expects uint8 pixels, got {batch.dtype}")
    return batch.astype(np.float32) / np.float32(255.0)


def float_to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] (any layout) -> uint8, clipped and rounded to nearest."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def chw_to_hwc_uint8(images: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3] (exact for images that came from uint8)."""
    return float_to_uint8(images).transpose(0, 2, 3, 1)


def hwc_uint8_to_chw(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    return images_to_float(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """uint8 [H, W, 3] -> float32 patches [rows*cols, 3, patch, patch] in [0, 1], row-major; the
    right and bottom edges are padded by repeating the last pixel."""
    h, w = image.shape[:2]
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.pad(image, ((0, rows * patch - h), (0, cols * patch - w), (0, 0)), mode="edge")
    tiles = padded.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, patch, patch)
    return tiles.astype(np.float32) / 255.0, rows, cols


def from_patches(patches: np.ndarray, rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """Float patches [rows*cols, 3, p, p] -> uint8 [height, width, 3] (cropped)."""
    p = patches.shape[-1]
    image = patches.reshape(rows, cols, 3, p, p).transpose(0, 3, 1, 4, 2).reshape(rows * p, cols * p, 3)
    return float_to_uint8(image[:height, :width])
