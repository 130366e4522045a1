"""Images of any size to ``.fsq`` files and back: tile, encode, pack; unpack, decode, stitch.

An H x W image is padded on the right and bottom to whole model-sized patches by repeating its
edge pixels (a flat border would cost the codec bits and bleed dark edges into the last tiles),
cut into patches row by row, and encoded; ``decompress`` decodes the patches, stitches them and
crops back to H x W.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_with
from fsqdeploy.images import from_patches, read_image, to_patches
from fsqdeploy.runtime.bitstream import FsqHeader, check_model, load_fsq, save_fsq
from fsqdeploy.runtime.codec import Codec


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
