"""Fidelity: each backend run on the fidelity set and compared with the PyTorch FP32 reference
(``fsqdeploy.compare``: one comparator, one ``Fidelity`` vocabulary), and the gates on that record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsqdeploy import compare
from fsqdeploy.metrics import fixed_bits
from fsqdeploy.runtime.bench.settings import REFERENCE, BackendSpec, Gates
from fsqdeploy.runtime.codec import Codec


@dataclass(frozen=True)
class Reference:
    """The fidelity set and what PyTorch FP32 makes of it."""

    images: np.ndarray  # float32 [N, 3, S, S] in [0, 1]
    indices: np.ndarray  # int32 [N, W] (patch models) or [N, D, h, w] (spatial), the reference encoder's
    decoded: np.ndarray  # float32 [N, 3, S, S], the reference decoder on ``indices``
    spec: BackendSpec = BackendSpec(REFERENCE)  # the row that produced it: torch, or torch:cuda
    # Spatial models: whole photos (uint8 [H, W, 3], sizes differ) and the reference's indices of
    # each, as compress writes them; every backend's fidelity row then covers them too.
    photos: tuple[np.ndarray, ...] = ()
    photo_cells: tuple[np.ndarray, ...] = ()
    photo_pixels: tuple[np.ndarray, ...] = ()  # the reference's decode of photo_cells: what decompress writes
    # Spatial models: the image timed at batch 1 (float32 [1, 3, H, W]) and the reference's indices
    # of it (``--photo-size``); None for patch models or when off.
    timing_photo: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def run(self) -> compare.Run:
        return compare.Run(self.indices, self.decoded)


def reference_outputs(reference: Codec, images: np.ndarray, spec: BackendSpec | None = None) -> Reference:
    out = compare.run(reference, images)
    return Reference(images, out.indices, out.decoded, spec or BackendSpec(reference.backend))


def rate(levels: Sequence[int], image_size: int, cells: int = 1) -> dict[str, float]:
    """The fixed rate of one image_size x image_size bench image: ``fixed_bits`` per patch (patch
    models, ``cells`` = 1) or per latent cell times its ``cells`` (spatial models), and that per pixel."""
    bits = fixed_bits(levels) * cells
    return {"bits_per_image": bits, "bits_per_pixel": bits / (image_size * image_size)}


def cells_per_image(indices: np.ndarray) -> int:
    """Index vectors per image: 1 for a patch model's [N, W], h*w for a spatial model's [N, D, h, w]."""
    return int(np.prod(indices.shape[2:])) if indices.ndim == 4 else 1


def compare_to_reference(spec: BackendSpec, ref: Reference, candidate: compare.Run,
                         levels: Sequence[int]) -> dict[str, Any]:
    """The fidelity row (without its gate): ``candidate`` is the backend's run on ref.images, with
    ref.indices decoded too (``decoded_reference_indices``) so the decoder's own error is seen apart
    from the encoder's flips."""
    fidelity = compare.compare(ref.run, candidate, ref.images)
    return {
        "backend": spec.backend,
        "precision": spec.precision,
        "device": spec.placement,
        "reference": spec == ref.spec,
        "reduced_precision": spec.reduced_reason,  # null: the backend computes what "precision" says
        **fidelity.to_dict(),
        **rate(levels, ref.images.shape[-1], cells_per_image(ref.indices)),
    }


def measure_fidelity(codec: Codec, spec: BackendSpec, ref: Reference) -> dict[str, Any]:
    candidate = compare.run(codec, ref.images, reference_indices=ref.indices)
    row = compare_to_reference(spec, ref, candidate, codec.levels)
    if ref.photos:
        row.update(photo_agreement(codec, ref))
    if codec.encoder.variant is not None:  # a CPU runtime: which graph rewrites ran, and who chose them
        row["graph_variants"] = {"encoder": codec.encoder.variant, "decoder": codec.decoder.variant,
                                 "tuned": codec.encoder.tuned and codec.decoder.tuned}
    return row


def photo_codes(codec: Codec, photos: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each whole photo's indices as ``fsqdeploy compress`` writes them (padded, one pass or tiled),
    and the uint8 image ``fsqdeploy decompress`` makes of them."""
    cells, pixels = [], []
    for photo in photos:
        header, indices = codec.encode_image(photo)
        cells.append(indices)
        pixels.append(codec.decode_image(header, indices))
    return cells, pixels


def photo_agreement(codec: Codec, ref: Reference) -> dict[str, Any]:
    """Spatial models: the backend's indices of the whole photos (each at its own size, through the
    dynamic-shape graphs) against the reference's (equal indices mean byte-identical .fsq files), and
    its decode of the reference's files against the reference's decode, as 8-bit pixels (what
    decompress writes: how far one file decodes apart on two backends)."""
    flipped = levels_apart = unequal = values = pixels = 0
    for photo, cells, reference_pixels in zip(ref.photos, ref.photo_cells, ref.photo_pixels):
        header, own = codec.encode_image(photo)
        flipped += int((own != cells).sum())
        values += cells.size
        apart = np.abs(codec.decode_image(header, cells).astype(np.int16) - reference_pixels)
        unequal += int((apart > 0).sum())
        pixels += apart.size
        levels_apart = max(levels_apart, int(apart.max()))
    return {"photos": len(ref.photos), "photo_index_agreement": 1.0 - flipped / values if values else 1.0,
            "photo_flipped_indices": flipped, "photo_pixel_agreement": 1.0 - unequal / pixels if pixels else 1.0,
            "photo_max_pixel_error": levels_apart}


def check_gate(row: dict[str, Any], gates: Gates) -> dict[str, Any]:
    """{passed, reasons} for one fidelity row; the reference row passes by definition. FP32 rows must
    compute what PyTorch does (indices, and the decoder on the same indices); reduced-precision rows
    (and FP32 rows the backend computes in less, ``reduced_precision``) may flip a few indices, so
    what a user sees (the round trip) is held to a PSNR instead."""
    reasons = []
    if row["reference"]:
        return {"passed": True, "reasons": []}
    if row["precision"] == "fp32" and not row.get("reduced_precision"):
        if row["index_agreement"] < gates.min_index_agreement:
            reasons.append(f"index agreement {100 * row['index_agreement']:.4f}% < "
                           f"{100 * gates.min_index_agreement:.4g}% (--min-index-agreement)")
        if row.get("photo_index_agreement", 1.0) < gates.min_index_agreement:
            reasons.append(f"whole-photo index agreement {100 * row['photo_index_agreement']:.4f}% < "
                           f"{100 * gates.min_index_agreement:.4g}% (--min-index-agreement)")
        if row["max_abs_error"] > gates.max_decoder_error:
            reasons.append(f"decoder max abs error {row['max_abs_error']:.3g} > "
                           f"{gates.max_decoder_error:.3g} (--max-decoder-error)")
    else:
        if row["index_agreement"] < gates.min_index_agreement_reduced:
            reasons.append(f"index agreement {100 * row['index_agreement']:.4f}% < "
                           f"{100 * gates.min_index_agreement_reduced:.4g}% (--min-index-agreement-reduced)")
        if row["roundtrip_psnr_vs_reference"] < gates.min_psnr_vs_reference:
            reasons.append(f"PSNR vs reference {row['roundtrip_psnr_vs_reference']:.2f} dB < "
                           f"{gates.min_psnr_vs_reference:g} dB (--min-psnr-vs-reference)")
    return {"passed": not reasons, "reasons": reasons}
