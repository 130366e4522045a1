"""JPEG and WebP (Pillow) at the codec's rate: each format is one small class; ``Baseline.run`` is
shared, so a new baseline is one class in ``BASELINES``.

Each image is encoded at the highest quality whose whole file (headers included) fits the codec's
bytes per image, and at the lowest quality, where each format's rate bottoms out.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np

from fsqdeploy.images import chw_to_hwc_uint8, hwc_uint8_to_chw, is_grey
from fsqdeploy.metrics import mean_psnr, ssim


def quality_vs_input(decoded: np.ndarray, originals: np.ndarray) -> tuple[float, float]:
    """Mean per-image PSNR (dB) and SSIM of reconstructions against their inputs, float [N, 3, H, W]:
    the one metrics function of every rate-distortion row, the codec's included."""
    return mean_psnr(decoded, originals), float(ssim(decoded, originals).double().mean())


class Baseline:
    """An image format saved by Pillow. Subclasses name it and give its best save options."""

    name: ClassVar[str]  # the report's ``codec``
    pil_format: ClassVar[str]
    options: ClassVar[dict[str, Any]]
    min_quality: ClassVar[int] = 1
    max_quality: ClassVar[int] = 95

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """uint8 [H, W, 3] -> the bytes of a whole file; a grey image (R = G = B) as one channel, as
        anyone saves a grey photo (JPEG's greyscale files skip the chroma the RGB ones carry)."""
        from PIL import Image

        buf = io.BytesIO()
        pixels = Image.fromarray(image[..., 0] if is_grey(image) else image)
        pixels.save(buf, format=self.pil_format, quality=quality, **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))

    def best_quality_within(self, image: np.ndarray, budget: int) -> tuple[int, bytes] | None:
        """The highest quality whose file is at most ``budget`` bytes, by binary search (file size
        grows with quality), and that file; None when even the lowest quality is larger."""
        lo_data = self.encode(image, self.min_quality)
        if len(lo_data) > budget:
            return None
        lo, hi = self.min_quality, self.max_quality
        best = (lo, lo_data)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            data = self.encode(image, mid)
            if len(data) <= budget:
                lo, best = mid, (mid, data)
            else:
                hi = mid - 1
        return best

    def measure_files(self, originals: np.ndarray, files: list[bytes]) -> dict[str, float]:
        """Mean file bytes, bits per pixel, PSNR and SSIM of ``files``, one per uint8 image [N, H, W, 3]."""
        decoded = hwc_uint8_to_chw(np.stack([self.decode(f) for f in files]))
        psnr_in, ssim_in = quality_vs_input(decoded, hwc_uint8_to_chw(originals))
        nbytes = np.array([len(f) for f in files])
        pixels = originals.shape[1] * originals.shape[2]
        return {"bytes_mean": float(nbytes.mean()), "bits_per_pixel": float(nbytes.mean() * 8 / pixels),
                "psnr_vs_input": psnr_in, "ssim_vs_input": ssim_in}

    def run(self, originals: np.ndarray, budget_bytes: int, scope: str) -> list[dict[str, Any]]:
        """Two rows on uint8 images [N, H, W, 3]: ``equal_bytes`` (per image, the best quality that
        fits ``budget_bytes``) and ``min_quality``."""
        common = {"codec": self.name, "scope": scope, "image_size": list(originals.shape[1:3]),
                  "images": len(originals), "options": self.options}
        smallest = [self.encode(img, self.min_quality) for img in originals]
        fits = [self.best_quality_within(img, budget_bytes) for img in originals]
        kept = [i for i, f in enumerate(fits) if f is not None]
        at_budget = {**common, "mode": "equal_bytes", "budget_bytes": budget_bytes, "images_within_budget": len(kept),
                     "quality_mean": None, "bytes_mean": None, "bits_per_pixel": None,
                     "psnr_vs_input": None, "ssim_vs_input": None, "note": None}
        if kept:
            files = [fits[i] for i in kept]
            at_budget.update(quality_mean=float(np.mean([f[0] for f in files])),  # type: ignore[index]
                             **self.measure_files(originals[kept], [f[1] for f in files]))  # type: ignore[index]
        if len(kept) < len(originals):
            over = [len(smallest[i]) for i in range(len(originals)) if fits[i] is None]
            at_budget["note"] = (f"n/a for {len(over)} of {len(originals)} images: smallest {self.name.upper()} is "
                                 f"{min(over)} bytes > {budget_bytes}"
                                 + ("" if min(over) == max(over) else f" (up to {max(over)})"))
        lowest = {**common, "mode": "min_quality", "quality": self.min_quality,
                  **self.measure_files(originals, smallest)}
        return [at_budget, lowest]


class JPEG(Baseline):
    name, pil_format = "jpeg", "JPEG"
    options: ClassVar[dict[str, Any]] = {"optimize": True}  # optimized Huffman tables: JPEG's smallest


class WebP(Baseline):
    name, pil_format = "webp", "WEBP"
    options: ClassVar[dict[str, Any]] = {"method": 6}  # the slowest, smallest method


BASELINES: tuple[Baseline, ...] = (JPEG(), WebP())


def baseline_rows(images: np.ndarray, budget_bytes: int, scope: str) -> list[dict[str, Any]]:
    """Every baseline on float images [N, 3, H, W] at the codec's byte budget and at its lowest quality."""
    originals = chw_to_hwc_uint8(images)
    return [row for baseline in BASELINES for row in baseline.run(originals, budget_bytes, scope)]
