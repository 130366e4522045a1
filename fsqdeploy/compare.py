"""Run two codecs on the same images, then compare: one comparator, one fidelity record.

Running and comparing are separate steps, as in Polygraphy's Comparator. ``run`` feeds images to
anything with ``encode(images) -> indices [N, W]`` and ``decode(indices) -> images [N, 3, S, S]``
(the runtime ``Codec``; ``SessionCodec`` wraps two ONNX Runtime sessions) in batches, and
``compare`` turns a reference run and a candidate run into a ``Fidelity``. The export's parity gate,
the FP16 record, calibration's accuracy and bench all use these two, so every JSON record speaks
``Fidelity.to_dict()``'s vocabulary:

- ``images``: N, the images both codecs encoded.
- ``index_agreement``: share of the N x W index values equal to the reference's.
- ``flipped_indices``: count of index values that differ; ``flipped_images``: count of images with
  at least one; ``flipped_image_share`` = flipped_images / images.
- ``max_abs_error``, ``psnr_vs_reference``: the candidate's decoder against the reference's, both fed
  the reference's indices: the decoder's own error, with index flips taken out.
- ``roundtrip_max_abs_error``, ``roundtrip_psnr_vs_reference``: each codec's own round trip (its
  encoder's indices through its decoder) against the other's: what a user of the candidate sees,
  flips included.
- ``psnr_vs_input``, ``ssim_vs_input``: the candidate's round trip against the input images;
  ``reference_psnr_vs_input``: the reference's.
- ``pixel_agreement``, ``max_pixel_error``: the decoder-only pair again, as the 8-bit pixels a
  decompressed file gets (``float_to_uint8``): the share of values equal to the reference's, and the
  largest difference in levels. Float sums that differ by an ulp between runtimes move a value that
  sits next to a rounding boundary, so the same file can decode one level apart in a few pixels.

Every PSNR is ``fsqdeploy.metrics.mean_psnr``: the mean of per-image PSNRs, each capped at
``PSNR_CAP`` (100 dB) for identical images. The decoder-only pair needs the candidate's decoder run
on the reference's indices (``run(..., reference_indices=)``); without it, and with any index
flipped, those two fields and the pixel pair are None, as are the input fields without
``images``. ``to_dict`` leaves None fields out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from fsqdeploy.artifact import IMAGES, INDICES
from fsqdeploy.images import float_to_uint8
from fsqdeploy.metrics import mean_psnr, ssim

DEFAULT_BATCH = 256


class Comparable(Protocol):
    """What ``run`` can run: the runtime Codec has these, and so do the adapters below."""

    def encode(self, images: np.ndarray) -> np.ndarray: ...  # float [N, 3, S, S] in [0, 1] -> int [N, W]

    def decode(self, indices: np.ndarray) -> np.ndarray: ...  # int [N, W] -> float [N, 3, S, S]


class SessionCodec:
    """An encoder and a decoder session (ONNX Runtime, or anything with ``run(outputs, feed)``),
    fed by the artifact's I/O contract: float32 images in, int32 indices between."""

    def __init__(self, encoder: Any, decoder: Any):
        self.encoder, self.decoder = encoder, decoder

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.run([INDICES], {IMAGES: images})[0]

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return self.decoder.run([IMAGES], {INDICES: indices.astype(np.int32, copy=False)})[0]


def batched(fn: Callable[[np.ndarray], np.ndarray], array: np.ndarray, batch_size: int = DEFAULT_BATCH
            ) -> np.ndarray:
    """``fn`` over consecutive batches of ``array`` (each C-contiguous), concatenated: the one batch loop."""
    if batch_size < 1:
        raise ValueError(f"compare: batch size must be at least 1, got {batch_size}")
    if len(array) == 0:
        raise ValueError("compare: no images to run")
    return np.concatenate([fn(np.ascontiguousarray(array[i : i + batch_size]))
                           for i in range(0, len(array), batch_size)])


@dataclass(frozen=True)
class Run:
    """What one codec made of the images."""

    indices: np.ndarray  # int [N, W]: encode(images)
    decoded: np.ndarray  # float [N, 3, S, S]: decode(indices)
    decoded_reference_indices: np.ndarray | None = None  # decode(reference indices), when run with them


def run(codec: Comparable, images: np.ndarray, batch_size: int = DEFAULT_BATCH, *,
        reference_indices: np.ndarray | None = None) -> Run:
    """Encode float images [N, 3, S, S] in [0, 1] and decode the indices, ``batch_size`` images a
    call; with ``reference_indices`` (another codec's indices of the same images) decode those too,
    which isolates this decoder's error from this encoder's flips."""
    images = np.asarray(images, dtype=np.float32)
    indices = batched(codec.encode, images, batch_size)
    if reference_indices is None:
        return Run(indices, batched(codec.decode, indices, batch_size))
    reference_indices = np.asarray(reference_indices)
    if reference_indices.shape != indices.shape:
        raise ValueError(f"compare: reference indices {reference_indices.shape} do not match {indices.shape}")
    from_reference = batched(codec.decode, reference_indices, batch_size)
    # A batch whose indices equal the reference's decodes to what the reference indices decoded to
    # (the same decoder, the same input, the same batch), so only batches with a flip run again.
    # When every index agrees, as the parity gate requires, the round trip costs nothing extra.
    decoded = from_reference.copy()
    for start in range(0, len(indices), batch_size):
        own = indices[start : start + batch_size]
        if not np.array_equal(own, reference_indices[start : start + batch_size]):
            decoded[start : start + batch_size] = codec.decode(np.ascontiguousarray(own))
    return Run(indices, decoded, from_reference)


@dataclass(frozen=True)
class Fidelity:
    """A candidate codec against a reference codec on the same images; fields in the module docstring."""

    images: int
    index_agreement: float
    flipped_indices: int
    flipped_images: int
    flipped_image_share: float
    max_abs_error: float | None
    psnr_vs_reference: float | None
    roundtrip_max_abs_error: float
    roundtrip_psnr_vs_reference: float
    psnr_vs_input: float | None = None
    ssim_vs_input: float | None = None
    reference_psnr_vs_input: float | None = None
    pixel_agreement: float | None = None
    max_pixel_error: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON: the fields that were measured, under their one name each."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    # float64: the difference of two float32 pixels is then exact, whatever their magnitudes.
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def compare(reference: Run, candidate: Run, images: np.ndarray | None = None) -> Fidelity:
    """The candidate's run against the reference's on the same images (and, given ``images``, both
    against those inputs)."""
    if reference.indices.shape != candidate.indices.shape or reference.decoded.shape != candidate.decoded.shape:
        raise ValueError(f"compare: the runs differ in shape: indices {reference.indices.shape} vs "
                         f"{candidate.indices.shape}, images {reference.decoded.shape} vs {candidate.decoded.shape}")
    equal = np.asarray(reference.indices) == np.asarray(candidate.indices)
    differ, n = ~equal, len(equal)
    flipped_images = int(differ.reshape(n, -1).any(axis=1).sum())
    decoder = candidate.decoded_reference_indices
    if decoder is None and not differ.any():
        decoder = candidate.decoded  # no flips: its own indices are the reference's
    fields: dict[str, Any] = {}
    if images is not None:
        images = np.asarray(images, dtype=np.float32)
        if images.shape != candidate.decoded.shape:
            raise ValueError(f"compare: input images {images.shape} do not match the decoded {candidate.decoded.shape}")
        fields = {
            "psnr_vs_input": mean_psnr(candidate.decoded, images),
            "ssim_vs_input": float(ssim(candidate.decoded, images).double().mean()) if n else 1.0,
            "reference_psnr_vs_input": mean_psnr(reference.decoded, images),
        }
    if decoder is not None:
        pixels, reference_pixels = float_to_uint8(decoder).astype(np.int16), float_to_uint8(reference.decoded)
        levels_apart = np.abs(pixels - reference_pixels)
        fields["pixel_agreement"] = float((levels_apart == 0).mean()) if levels_apart.size else 1.0
        fields["max_pixel_error"] = int(levels_apart.max()) if levels_apart.size else 0
    return Fidelity(
        images=n,
        index_agreement=float(equal.mean()) if equal.size else 1.0,
        flipped_indices=int(differ.sum()),
        flipped_images=flipped_images,
        flipped_image_share=flipped_images / n if n else 0.0,
        max_abs_error=None if decoder is None else _max_abs(decoder, reference.decoded),
        psnr_vs_reference=None if decoder is None else mean_psnr(decoder, reference.decoded),
        roundtrip_max_abs_error=_max_abs(candidate.decoded, reference.decoded),
        roundtrip_psnr_vs_reference=mean_psnr(candidate.decoded, reference.decoded),
        **fields,
    )
