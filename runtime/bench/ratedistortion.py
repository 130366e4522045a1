"""The codec's own rate-distortion rows beside the baselines': on the model-size fidelity images
(``scope: "patch"``) and, for patch models, on whole tiles run through the codec's tiling (``scope:
"tile"``); whole photos (``scope: "photo"``) are ``photos``'.

Rate is the fixed rate (``fsqdeploy.metrics.fixed_bits`` per patch) as packed payload bytes, with
the whole ``.fsq`` file's size beside it for tiles (``runtime.bitstream.file_length``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import from_patches, hwc_uint8_to_chw, to_patches
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.runtime.bench.baselines import baseline_rows, quality_vs_input
from fsqdeploy.runtime.bench.fidelity import Reference, cells_per_image
from fsqdeploy.runtime.bench.settings import BenchSettings
from fsqdeploy.runtime.bitstream import file_length
from fsqdeploy.runtime.codec import Codec


def codec_row(scope: str, images: int, image_size: Sequence[int], payload_bytes: float, pixels: int,
              psnr_in: float, ssim_in: float, **extra: Any) -> dict[str, Any]:
    return {"codec": "fsq", "scope": scope, "image_size": list(image_size), "images": images,
            "mode": "codec", "bytes_mean": payload_bytes, "bits_per_pixel": payload_bytes * 8 / pixels,
            "psnr_vs_input": psnr_in, "ssim_vs_input": ssim_in, **extra}


def patch_rows(ref: Reference, levels: Sequence[int]) -> list[dict[str, Any]]:
    """The reference codec on the fidelity images vs the baselines at its payload bytes per image
    (one patch of a patch model; the cells of a crop's latent grid for a spatial model)."""
    size = ref.images.shape[-1]
    bits = fixed_bits(levels) * cells_per_image(ref.indices)
    row = codec_row("patch", len(ref.images), (size, size), bits / 8, size * size,
                    *quality_vs_input(ref.decoded, ref.images))
    return [row, *baseline_rows(ref.images, math.ceil(bits / 8), "patch")]


def _no_tiles(note: str) -> list[dict[str, Any]]:
    return [{"codec": "fsq", "scope": "tile", "mode": "codec", "note": f"n/a: {note}"}]


def tile_rows(reference: Codec, settings: BenchSettings) -> list[dict[str, Any]]:
    """Whole tiles (e.g. 256x256 photo crops) through the codec's tiling vs the baselines at equal bytes."""
    from fsqdeploy.data import load_images

    size = settings.tile_size
    try:
        splits = load_images(settings.tile_data, size)
    except FSQDeployError as e:
        return _no_tiles(str(e))
    crops = np.concatenate([splits.test, splits.train])[: settings.tile_images]
    if len(crops) == 0:
        return _no_tiles(f"{settings.tile_data!r} has no images")
    originals = crops.transpose(0, 2, 3, 1)  # uint8 [N, H, W, 3]
    decoded, patches_per_tile = [], 0
    for img in originals:
        patches, rows, cols = to_patches(img, reference.image_size)
        patches_per_tile = rows * cols
        decoded.append(from_patches(reference.decode(reference.encode(patches)), rows, cols, size, size))
    payload = math.ceil(fixed_bits(reference.levels) * patches_per_tile / 8)
    psnr_in, ssim_in = quality_vs_input(hwc_uint8_to_chw(np.stack(decoded)), hwc_uint8_to_chw(originals))
    row = codec_row("tile", len(crops), (size, size), float(payload), size * size, psnr_in, ssim_in,
                    data=splits.source, patches_per_tile=patches_per_tile,
                    file_bytes=file_length(reference.levels, patches_per_tile))
    return [row, *baseline_rows(hwc_uint8_to_chw(originals), payload, "tile")]
