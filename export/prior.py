"""The entropy coder's prior, frozen at export: per-channel index counts over the run's training photos.

Every training photo (``fsqdeploy.data.load_photos(spec).train``, never the held-out test photos
the parity gate and the benchmarks judge the codec on) is edge-padded to multiples of f as
``Codec.compress`` pads it and encoded whole by the PyTorch model, whose indices the parity gate
has just shown equal to the exported graphs'. Each latent channel d gets the counts of its
``L_d`` symbols, quantized to 2^16 by ``fsqdeploy.entropy.quantize_counts`` (integers only,
every symbol at least 1). The tables go to ART/prior.json; the manifest lists the file and names it
in its ``prior`` record, which is what makes ``Codec.compress`` write coding 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsqdeploy.artifact import file_entry
from fsqdeploy.entropy import PRIOR_FILE, Prior, quantize_counts
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import images_to_float, pad_to_multiple
from fsqdeploy.model import FSQVAE


def count_indices(model: FSQVAE, photos: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [D, max L]: how often channel d took symbol s over every latent cell of ``photos``."""
    levels = list(model.levels)
    counts = np.zeros((len(levels), max(levels)), dtype=np.int64)
    f = model.config.downsample
    for photo in photos:
        padded = pad_to_multiple(np.asarray(photo), f)
        x = torch.from_numpy(images_to_float(padded.transpose(2, 0, 1)[None]))
        grid = model.encode(x).cpu().numpy()[0]  # [D, H/f, W/f]
        for d, level in enumerate(levels):
            counts[d, :level] += np.bincount(grid[d].ravel(), minlength=level)[:level]
    return counts


def build_prior(model: FSQVAE, photos: Sequence[np.ndarray]) -> Prior:
    counts = count_indices(model, photos)
    return Prior(tuple(model.levels), [quantize_counts(counts[d, :level]) for d, level in enumerate(model.levels)])


def add_prior(art: Path, manifest: dict[str, Any], model: FSQVAE, spec: str) -> Prior:
    """Build the prior from ``spec``'s training photos, write ART/prior.json, and record it in
    ``manifest`` (its files and its ``prior`` record)."""
    from fsqdeploy.data import load_photos

    if not model.config.spatial:
        raise FSQDeployError("export: the entropy coder's prior is built for spatial (conv) models only. "
                             "Note: patch models write fixed-rate files")
    splits = load_photos(spec, model.config.downsample)
    photos = list(splits.train)
    prior = build_prior(model, photos)
    symbols = sum(-(-p.shape[0] // model.config.downsample) * -(-p.shape[1] // model.config.downsample)
                  for p in photos) * len(model.levels)
    source = {"data": splits.source, "split": "train", "photos": len(photos), "symbols": int(symbols)}
    prior.save(art / PRIOR_FILE, source)
    manifest["files"][PRIOR_FILE] = file_entry(art / PRIOR_FILE)
    manifest["prior"] = {"file": PRIOR_FILE, "coding": 1, "sha256": prior.sha256.hex(), **source}
    return prior
