"""The entropy coder's prior, frozen at export: per-channel index counts over the run's training photos.

Every training photo (``fsqdeploy.data.load_photos(spec).train``, never the held-out test photos
the parity gate and the benchmarks judge the codec on) is edge-padded to multiples of f as
``Codec.compress`` pads it and encoded whole by the PyTorch model, whose indices the parity gate
has just shown equal to the exported graphs'. Each latent channel d gets the counts of its
``L_d`` symbols, quantized to 2^16 by ``fsqdeploy.entropy.quantize_counts`` (integers only,
every symbol at least 1). Coding 2's context tables count the same symbols by their above and left
neighbours' indices in the channel (``count_contexts``), each context's counts smoothed towards the
channel's overall distribution so that a context the training photos seldom show still codes well
on other photos. The tables go to ART/prior.json; the manifest lists the file and names it in its
``prior`` record, which is what makes ``Codec.compress`` entropy-code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsqdeploy.artifact import file_entry
from fsqdeploy.entropy import PRIOR_FILE, SYMBOLS_PER_LANE, Prior, context_neighbours, quantize_counts
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import images_to_float, pad_to_multiple
from fsqdeploy.model import FSQVAE

# Coding 2's tables are built when all of them together hold at most this many entries (sum of L_d^3):
# 1911 for the default levels 8,8,8,5,5,5; levels in the hundreds would need megabytes of tables.
MAX_CONTEXT_ENTRIES = 1 << 18
MAX_SYMBOLS_PER_LANE = 1 << 24  # the lane rule's bound (a nearly constant latent codes in almost no bits)
# Each context's counts get the channel's distribution added with this weight, in observations: a
# context seen a few times leans on the channel's histogram, one seen thousands of times on its own.
CONTEXT_PSEUDO_COUNT = 4
# The lane rule aims at one lane per this many payload bytes: a lane's final state costs ~3.5 bytes.
BYTES_PER_LANE = 512


def latent_grids(model: FSQVAE, photos: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each photo, edge-padded to multiples of f as ``Codec.compress`` pads it, as its int64 latent
    grid [rows, cols, D] (the cells' order and channel axis the .fsq file holds)."""
    f = model.config.downsample
    grids = []
    for photo in photos:
        padded = pad_to_multiple(np.asarray(photo), f)
        x = torch.from_numpy(images_to_float(padded.transpose(2, 0, 1)[None]))
        grids.append(model.encode(x).cpu().numpy()[0].transpose(1, 2, 0).astype(np.int64))
    return grids


def count_indices(levels: Sequence[int], grids: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [D, max L]: how often channel d took symbol s over every latent cell of ``grids``."""
    counts = np.zeros((len(levels), max(levels)), dtype=np.int64)
    for grid in grids:
        for d, level in enumerate(levels):
            counts[d, :level] += np.bincount(grid[..., d].ravel(), minlength=level)[:level]
    return counts


def count_contexts(levels: Sequence[int], grids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per channel d, int64 [L_d * L_d, L_d]: how often symbol s followed context above * L_d + left
    (the neighbours' indices in channel d, L_d // 2 outside the grid: coding 2's contexts)."""
    counts = [np.zeros((level * level, level), dtype=np.int64) for level in levels]
    for grid in grids:
        above, left = context_neighbours(grid, levels)
        for d, level in enumerate(levels):
            flat = (above[..., d] * level + left[..., d]) * level + grid[..., d]
            counts[d] += np.bincount(flat.ravel(), minlength=level ** 3).reshape(level * level, level)
    return counts


def smooth_contexts(context_counts: np.ndarray, channel_counts: np.ndarray) -> list[list[int]]:
    """A context's counts plus CONTEXT_PSEUDO_COUNT observations spread as the channel's counts are,
    in integers (everything times the channel's total), one row per context."""
    total = int(channel_counts.sum())
    if total == 0:
        return [[int(c) for c in row] for row in context_counts]
    return [[int(c) * total + CONTEXT_PSEUDO_COUNT * int(m) for c, m in zip(row, channel_counts)]
            for row in context_counts]


def build_prior(levels: Sequence[int], grids: Sequence[np.ndarray]) -> Prior:
    """The frozen prior of ``grids`` (int64 [rows, cols, D] each): per-channel tables, and coding 2's
    context tables where they fit MAX_CONTEXT_ENTRIES, with the lane rule set so that the training
    grids' payloads get one lane per BYTES_PER_LANE bytes."""
    levels = tuple(int(v) for v in levels)
    counts = count_indices(levels, grids)
    tables = [quantize_counts(counts[d, :level]) for d, level in enumerate(levels)]
    if sum(level ** 3 for level in levels) > MAX_CONTEXT_ENTRIES:
        return Prior(levels, tables)
    contexts = [[quantize_counts(row) for row in smooth_contexts(c, counts[d, :level])]
                for d, (level, c) in enumerate(zip(levels, count_contexts(levels, grids)))]
    draft = Prior(levels, tables, contexts)
    symbols = sum(g.size for g in grids)
    bits = sum(draft.context_cross_entropy_bits(g) for g in grids)
    per_lane = SYMBOLS_PER_LANE if bits <= 0 else int(np.ceil(8 * BYTES_PER_LANE * symbols / bits))
    return Prior(levels, tables, contexts, max(SYMBOLS_PER_LANE, min(per_lane, MAX_SYMBOLS_PER_LANE)))


def add_prior(art: Path, manifest: dict[str, Any], model: FSQVAE, spec: str) -> Prior:
    """Build the prior from ``spec``'s training photos, write ART/prior.json, and record it in
    ``manifest`` (its files and its ``prior`` record)."""
    from fsqdeploy.data import load_photos

    if not model.config.spatial:
        raise FSQDeployError("export: the entropy coder's prior is built for spatial (conv) models only. "
                             "Note: patch models write fixed-rate files")
    splits = load_photos(spec, model.config.downsample)
    photos = list(splits.train)
    prior = build_prior(model.levels, latent_grids(model, photos))
    symbols = sum(-(-p.shape[0] // model.config.downsample) * -(-p.shape[1] // model.config.downsample)
                  for p in photos) * len(model.levels)
    source = {"data": splits.source, "split": "train", "photos": len(photos), "symbols": int(symbols)}
    prior.save(art / PRIOR_FILE, source)
    manifest["files"][PRIOR_FILE] = file_entry(art / PRIOR_FILE)
    manifest["prior"] = {"file": PRIOR_FILE, "coding": prior.coding, "sha256": prior.sha256.hex(), **source}
    return prior
