"""Whole photos (``scope: "photo"``): each compressed by the codec into a whole ``.fsq`` file
(``Codec.compress``: header and checksums included) and decompressed, against JPEG and WebP at no
more bytes than that file, photo by photo and overall; and, for the rate-distortion plot, each
baseline's quality sweep over the same photos (``mode: "quality"``).

The photos are coded at their own size, never resized: what ``fsqdeploy compress`` does to a user's
photo is what is measured. Every metric is on the uint8 images a user gets back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fsqdeploy.data import UnseenPhotos, unseen_photos
from fsqdeploy.entropy import Prior
from fsqdeploy.images import hwc_uint8_to_chw
from fsqdeploy.runtime.bench.baselines import BASELINES, Baseline, quality_vs_input
from fsqdeploy.runtime.bitstream import CODING_CONTEXT, CODING_FIXED, FsqHeader, read_fsq
from fsqdeploy.runtime.codec import Codec

SCOPE = "photo"
# The sweep's qualities: dense at the low end, where a codec at a fraction of a bit per pixel sits.
SWEEP_QUALITIES = (1, 2, 3, 5, 8, 12, 18, 25, 35, 50, 65, 80, 90, 95)
WHOLE_IMAGE_SOURCES = ("sample", "folder")  # data kinds fsqdeploy.data.load_photos serves as whole photos

Row = dict[str, Any]


Photos = UnseenPhotos  # the whole photos bench codes: ones the model never trained on


def photo_source(photo_data: str | None, data: str | None) -> tuple[str, bool]:
    """(spec, explicit): ``--photo-data``, else ``--data`` when it is a source of whole photos
    (sample, folder:DIR), else sample. ``explicit``: the user named it, so a failure is an error."""
    if photo_data is not None:
        return photo_data, True
    if data is not None and data.strip().partition(":")[0] in WHOLE_IMAGE_SOURCES:
        return data, True
    return "sample", False


def load_bench_photos(spec: str, count: int | None, trained_on: str | None = None) -> Photos:
    """The first ``count`` photos of ``spec`` the model (trained on ``trained_on``) never trained on
    (``fsqdeploy.data.unseen_photos``)."""
    return unseen_photos(spec, trained_on, count, component="bench")


def _mean(rows: Sequence[Row], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def table_bits(header: FsqHeader, indices: np.ndarray, prior: Prior | None) -> float | None:
    """The cross-entropy in bits of ``indices`` under the tables the file was coded with, or None
    for a fixed-rate file (coding 0), whose payload size is exact by construction."""
    if header.coding == CODING_FIXED or prior is None:
        return None
    if header.coding == CODING_CONTEXT:
        return prior.context_cross_entropy_bits(np.reshape(indices, (header.grid_rows, header.grid_cols, -1)))
    return prior.cross_entropy_bits(indices)


def codec_photo_row(codec: Codec, name: str, photo: np.ndarray) -> Row:
    """One photo through compress and decompress: its file bytes, bits per pixel and quality."""
    data = codec.compress(photo)
    header, indices = read_fsq(data, codec.prior)
    decoded = codec.decompress(data)
    psnr_in, ssim_in = quality_vs_input(hwc_uint8_to_chw(decoded[None]), hwc_uint8_to_chw(photo[None]))
    height, width = photo.shape[:2]
    return {"codec": "fsq", "scope": SCOPE, "mode": "codec", "image": name, "image_size": [height, width],
            "images": 1, "bytes_mean": float(len(data)), "file_bytes": len(data),
            # the file is header, payload, payload CRC32: what the indices themselves cost, beside the file
            "payload_bytes": len(data) - header.header_length - 4,
            # what the file's tables say the payload should cost (entropy-coded files; None: fixed rate),
            # so the coder's own overhead is visible beside the actual bytes
            "coding": header.coding, "table_bits": table_bits(header, indices, codec.prior),
            "bits_per_pixel": 8 * len(data) / (height * width), "psnr_vs_input": psnr_in, "ssim_vs_input": ssim_in,
            "layout": "latent grid" if header.spatial else "patches", "grid": [header.grid_rows, header.grid_cols]}


def baseline_photo_rows(baseline: Baseline, name: str, photo: np.ndarray, budget: int) -> list[Row]:
    """The baseline's ``equal_bytes`` (at most ``budget`` bytes) and ``min_quality`` rows on one photo."""
    return [{**row, "image": name} for row in baseline.run(photo[None], budget, SCOPE)]


def overall_rows(per_photo: list[Row], codec_rows: list[Row]) -> list[Row]:
    """Means over the photos of every per-photo row, one row per codec and mode (``image: null``);
    the codec's row also says on how many photos it beats each baseline at equal bytes (PSNR)."""
    n = len(codec_rows)
    codec = {"codec": "fsq", "scope": SCOPE, "mode": "codec", "image": None, "images": n,
             **{k: _mean(codec_rows, k) for k in ("bytes_mean", "bits_per_pixel", "psnr_vs_input", "ssim_vs_input")},
             "beats": {}, "beats_smallest": {}}
    coded = [r for r in codec_rows if r.get("table_bits")]  # entropy-coded photos: their payloads vs tables
    codec["table_overhead"] = (8 * sum(r["payload_bytes"] for r in coded) / sum(r["table_bits"] for r in coded) - 1
                               if coded else None)
    rows = [codec]
    by_photo = {r["image"]: r for r in codec_rows}
    for baseline in BASELINES:
        at_budget = [r for r in per_photo if r["codec"] == baseline.name and r["mode"] == "equal_bytes"]
        fitted = [r for r in at_budget if r["images_within_budget"]]
        gains = [by_photo[r["image"]]["psnr_vs_input"] - r["psnr_vs_input"] for r in fitted]
        codec["beats"][baseline.name] = {"images": len(fitted), "wins": sum(g > 0 for g in gains),
                                         "psnr_gain_db": float(np.mean(gains)) if gains else None}
        missing = [r["image"] for r in at_budget if not r["images_within_budget"]]
        # Where even the baseline's lowest quality is larger than the codec's file, equal bytes cannot be
        # compared; its smallest file can (more bytes than the codec's, so a codec win there is a win).
        smallest = {r["image"]: r for r in per_photo if r["codec"] == baseline.name and r["mode"] == "min_quality"}
        floor = [(by_photo[name], smallest[name]) for name in missing if name in smallest]
        floor_gains = [c["psnr_vs_input"] - b["psnr_vs_input"] for c, b in floor]
        codec["beats_smallest"][baseline.name] = {
            "images": len(floor), "wins": sum(g > 0 for g in floor_gains),
            "psnr_gain_db": float(np.mean(floor_gains)) if floor else None,
            "bytes_ratio": float(np.mean([c["file_bytes"] / b["bytes_mean"] for c, b in floor])) if floor else None}
        rows.append({"codec": baseline.name, "scope": SCOPE, "mode": "equal_bytes", "image": None, "images": n,
                     "options": baseline.options, "budget_bytes": None, "images_within_budget": len(fitted),
                     **{k: _mean(fitted, k) for k in ("quality_mean", "bytes_mean", "bits_per_pixel",
                                                      "psnr_vs_input", "ssim_vs_input")},
                     "note": (f"n/a for {len(missing)} of {n} photos ({', '.join(missing)}): even quality "
                              f"{baseline.min_quality} is larger than the codec's file; the means cover the others"
                              if missing else None)})
        lowest = [r for r in per_photo if r["codec"] == baseline.name and r["mode"] == "min_quality"]
        rows.append({"codec": baseline.name, "scope": SCOPE, "mode": "min_quality", "image": None, "images": n,
                     "options": baseline.options, "quality": baseline.min_quality,
                     **{k: _mean(lowest, k) for k in ("bytes_mean", "bits_per_pixel", "psnr_vs_input",
                                                      "ssim_vs_input")}})
    return rows


def sweep_rows(photos: Photos, qualities: Sequence[int] = SWEEP_QUALITIES) -> list[Row]:
    """Each baseline at each quality over every photo: the means, one row per (baseline, quality)."""
    rows = []
    for baseline in BASELINES:
        for quality in qualities:
            measured = [baseline.measure_files(photo[None], [baseline.encode(photo, quality)])
                        for photo in photos.images]
            rows.append({"codec": baseline.name, "scope": SCOPE, "mode": "quality", "image": None,
                         "images": len(photos.images), "options": baseline.options, "quality": quality,
                         **{k: _mean(measured, k) for k in ("bytes_mean", "bits_per_pixel", "psnr_vs_input",
                                                            "ssim_vs_input")}})
    return rows


def photo_rows(codec: Codec, photos: Photos, *, sweep: bool = False) -> list[Row]:
    """Per photo: the codec's row, then each baseline's at no more than the codec's file bytes and at
    its lowest quality; then the overall rows; then (``sweep``) the baselines' quality sweep."""
    per_photo, codec_rows = [], []
    for name, photo in zip(photos.names, photos.images):
        row = codec_photo_row(codec, name, photo)
        codec_rows.append(row)
        per_photo.append(row)
        for baseline in BASELINES:
            per_photo += baseline_photo_rows(baseline, name, photo, row["file_bytes"])
    rows = per_photo + overall_rows(per_photo, codec_rows)
    return rows + sweep_rows(photos) if sweep else rows
