"""Image files to ``.fsq`` files and back, through ``Codec.encode_image`` / ``Codec.decode_image``.

A spatial (conv) model encodes an H x W image whole: padded on the right and bottom to multiples
of its factor f by repeating the edge pixels (a flat border would cost the codec bits and bleed a
dark edge into the image), encoded in one pass (or in tiles with a halo, with the same indices),
and written as a .fsq v2 latent grid; decompressing decodes the grid and crops back to H x W. A
patch (paper) model pads to whole model-sized patches, encodes them row by row and writes them as
v2 patches. With a prior in the artifact the grid is entropy-coded (coding 2, or 1 with a prior
without context tables; the codec's ``entropy`` off keeps coding 0). Files are written
atomically: a refused input leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_with
from fsqdeploy.images import read_image
from fsqdeploy.runtime.bitstream import FsqHeader, load_fsq, save_fsq_bytes
from fsqdeploy.runtime.codec import Codec

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}
# A lossy output format codes the decoded image a second time: at Pillow's default (75) that adds
# its own artefacts to the codec's; at 95 it loses little. PNG (the default), BMP and TIFF are exact.
LOSSY_QUALITY = {"JPEG": 95, "WEBP": 95}


def compress_file(codec: Codec, image_path: str | Path, out_path: str | Path) -> FsqHeader:
    header, _, data = codec.encode_file(read_image(image_path))
    save_fsq_bytes(out_path, data)
    return header


def decompress_file(codec: Codec, fsq_path: str | Path, out_path: str | Path) -> np.ndarray:
    header, indices = load_fsq(fsq_path, codec.prior)
    return write_image(out_path, codec.decode_image(header, indices), header.grey)


def write_image(out_path: str | Path, image: np.ndarray, grey: bool = False) -> np.ndarray:
    """uint8 [H, W, 3] to ``out_path`` in the format its suffix names; ``grey`` (a grey file's
    decode, whose channels are equal) as a one-channel image, as the original was."""
    out_path = Path(out_path)
    fmt = IMAGE_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise FSQDeployError(f"decompress: cannot write '{out_path.suffix}' images. Note: use .png")
    pixels = Image.fromarray(image[..., 0] if grey else image)
    options = {"quality": LOSSY_QUALITY[fmt]} if fmt in LOSSY_QUALITY else {}
    write_with(out_path, lambda tmp: pixels.save(tmp, format=fmt, **options))
    return image
