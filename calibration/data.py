"""Calibration and evaluation images, read through the hub's image sources (``fsqdeploy/data.py``).

Calibration draws ``samples`` images from the source's *train* split (a fixed-seed subset, so
a folder sorted by name does not calibrate on its first subfolder only). The sensitivity pass
scores layers on the *other* train images (the held-out subset, up to MAX_HOLDOUT): ranges fitted to the
calibration images flatter their own agreement (~0.3% for entropy on the paper shape), so judging
the targets there would keep too few layers in float. The reported targets are measured on the
*test* split, which neither sees (the splits coincide only for tiny folders, see ``load_images``;
with no train image left over, the held-out subset is the calibration subset). Pixels stay uint8
until a batch is handed to ONNX Runtime, through ``images_to_float`` as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsqdeploy.data import ImageSplits, dataset_digest, load_images, load_photos
from fsqdeploy.errors import FSQDeployError

SUBSET_SEED = 0  # fixed: the same data spec and sample count always pick the same images
DEFAULT_SAMPLES = 512
# The sensitivity pass's images: every train image calibration did not use, up to this many. Per-image
# agreement is heavy-tailed (a few images lose 20% of their indices), so 500-image subsets of the
# paper-shape model's train split differ by +-0.2%; a thousand or more pin it down.
MAX_HOLDOUT = 2048


@dataclass(frozen=True)
class CalibrationData:
    images: np.ndarray  # uint8 [samples, 3, S, S], read-only: the calibration subset of the train split
    holdout: np.ndarray  # uint8 [<= MAX_HOLDOUT, 3, S, S]: other train images, for the sensitivity pass
    test: np.ndarray  # uint8 [M, 3, S, S]: the images the targets are measured on
    source: str  # canonical data spec, e.g. "sample" or "folder:/abs/dir"
    digest: str  # train.data.dataset_digest of ``images``
    holdout_digest: str  # ... of ``holdout``
    test_digest: str  # ... and of ``test``


def photo_patch_splits(spec: str, image_size: int) -> ImageSplits:
    """Spatial models: the source's whole photos (``load_photos``: for ``sample``, the held-out
    photos are the test split) cut into training-size patches, so calibration reads train photos
    only and the targets are measured on photos it never saw."""
    from fsqdeploy.images import uint8_patches

    photos = load_photos(spec, image_size)

    def patches(split: tuple[np.ndarray, ...]) -> np.ndarray:
        out = np.concatenate([uint8_patches(p, image_size)[0] for p in split])
        out.flags.writeable = False
        return out

    return ImageSplits(train=patches(photos.train), test=patches(photos.test), source=photos.source)


def load_calibration_data(spec: str, image_size: int, samples: int | None, batch_size: int, eval_images: int,
                          spatial: bool = False) -> CalibrationData:
    """``samples`` train images of ``spec`` for calibration (None: DEFAULT_SAMPLES, or the whole
    train split if it is smaller) and up to ``eval_images`` test images. ``spatial``: patches of
    whole photos (``photo_patch_splits``) instead of the source's patch splits.

    Every user mistake is one FSQDeployError line: a bad spec or empty folder (from load_images),
    a batch size below 1, fewer samples than one batch, more samples than the source holds.
    """
    if batch_size < 1:
        raise FSQDeployError(f"calibrate: --batch-size must be at least 1, got {batch_size}")
    if samples is not None and samples < batch_size:
        raise FSQDeployError(f"calibrate: --samples {samples} is fewer than one batch (--batch-size {batch_size}). "
                             "Note: pass more samples or a smaller --batch-size")
    if eval_images < 1:
        raise FSQDeployError(f"calibrate: --eval-images must be at least 1, got {eval_images}")
    splits = photo_patch_splits(spec, image_size) if spatial else load_images(spec, image_size)
    available = len(splits.train)
    if samples is None:
        samples = min(DEFAULT_SAMPLES, available)
        if samples < batch_size:
            raise FSQDeployError(f"calibrate: data {splits.source!r} has {available} training images at "
                                 f"{image_size} px, fewer than one batch (--batch-size {batch_size}). "
                                 "Note: pass a smaller --batch-size or use a larger source")
    elif available < samples:
        raise FSQDeployError(f"calibrate: data {splits.source!r} has {available} training images at {image_size} px, "
                             f"fewer than --samples {samples}. Note: pass --samples {available} or fewer, "
                             "or use a larger source")
    order = np.random.default_rng(SUBSET_SEED).permutation(available)
    images = _subset(splits.train, order[:samples])
    rest = order[samples : samples + MAX_HOLDOUT]
    holdout = _subset(splits.train, rest) if len(rest) else images
    test = splits.test[:eval_images]
    return CalibrationData(images=images, holdout=holdout, test=test, source=splits.source,
                           digest=dataset_digest(images), holdout_digest=dataset_digest(holdout),
                           test_digest=dataset_digest(test))


def _subset(images: np.ndarray, pick: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(images[np.sort(pick)])
    out.flags.writeable = False
    return out
