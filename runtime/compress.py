"""Images of any size to ``.fsq`` files and back: tile, encode, pack; unpack, decode, stitch.

An H x W image is padded on the right and bottom to whole model-sized patches by repeating its
edge pixels (a flat border would cost the codec bits and bleed dark edges into the last tiles),
cut into patches row by row, and encoded; ``decompress`` decodes the patches, stitches them and
crops back to H x W.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_with
from fsqdeploy.runtime.bitstream import FsqHeader, check_model, load_fsq, save_fsq
from fsqdeploy.runtime.codec import Codec


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]; one clear error for anything that is not an image."""
    path = Path(path)
    if not path.is_file():
        raise FSQDeployError(f"compress: '{path}' does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FSQDeployError(f"compress: '{path}' is not a readable image ({type(e).__name__})") from None


def to_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """uint8 [H, W, 3] -> float32 patches [rows*cols, 3, patch, patch] in [0, 1], row-major."""
    h, w = image.shape[:2]
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.pad(image, ((0, rows * patch - h), (0, cols * patch - w), (0, 0)), mode="edge")
    tiles = padded.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, patch, patch)
    return tiles.astype(np.float32) / 255.0, rows, cols


def from_patches(patches: np.ndarray, rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """Float patches [rows*cols, 3, p, p] -> uint8 [height, width, 3] (cropped)."""
    p = patches.shape[-1]
    image = patches.reshape(rows, cols, 3, p, p).transpose(0, 3, 1, 4, 2).reshape(rows * p, cols * p, 3)
    return (np.clip(image[:height, :width], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def compress_image(codec: Codec, image: np.ndarray) -> tuple[FsqHeader, np.ndarray]:
    patches, _, _ = to_patches(image, codec.image_size)
    indices = codec.encode(patches)
    return FsqHeader.for_image(codec.model_id, image.shape[0], image.shape[1], codec.image_size, codec.levels), indices


def decompress_indices(codec: Codec, header: FsqHeader, indices: np.ndarray) -> np.ndarray:
    check_model(header, codec.model_id, codec.levels)
    if header.patch_size != codec.image_size:
        raise FSQDeployError(
            f"decompress: the file has {header.patch_size}-pixel patches, the model {codec.image_size}"
        )
    patches = codec.decode(indices)
    return from_patches(patches, header.grid_rows, header.grid_cols, header.image_height, header.image_width)


def compress_file(codec: Codec, image_path: str | Path, out_path: str | Path) -> FsqHeader:
    header, indices = compress_image(codec, read_image(image_path))
    save_fsq(out_path, header, indices)
    return header


def decompress_file(codec: Codec, fsq_path: str | Path, out_path: str | Path) -> np.ndarray:
    header, indices = load_fsq(fsq_path)
    image = decompress_indices(codec, header, indices)
    out_path = Path(out_path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}.get(out_path.suffix.lower())
    if fmt is None:
        raise FSQDeployError(f"decompress: cannot write '{out_path.suffix}' images. Note: use .png")
    write_with(out_path, lambda tmp: Image.fromarray(image).save(tmp, format=fmt))
    return image
