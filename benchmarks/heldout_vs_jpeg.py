"""Trained conv runs on the held-out sample photos against JPEG and WebP at no more bytes.

    python benchmarks/heldout_vs_jpeg.py RUN [RUN ...]

Each photo (fsqdeploy.data.HELDOUT_PHOTOS, never trained on) is coded as ``fsqdeploy compress``
codes it: edge-padded to a multiple of f, encoded and decoded in one pass, cropped back
(train/conv_loop.py's ``reconstruct_photo``); its bytes are those of the whole .fsq v2 file
(runtime/bitstream.py's ``write_fsq``, header included). The baselines are the bench's
(runtime/bench/baselines.py): per photo, the highest quality whose whole file fits those bytes.
A baseline that cannot fit at all prints as "n/a" and its margin is not a win.
These are fixed-rate files (coding 0): what ``compress`` writes only for a codec without a prior.
The entropy-coded files it writes for an exported artifact are measured by ``fsqdeploy bench ART``.
The training wall time is the run's own (metrics.jsonl's last ``elapsed_s``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from fsqdeploy.data import sample_photos
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.images import pad_to_multiple
from fsqdeploy.model import FSQVAE, WEIGHTS_FILE
from fsqdeploy.runtime.bench.baselines import JPEG, WebP
from fsqdeploy.runtime.bitstream import FsqHeader, grid_to_cells, write_fsq
from fsqdeploy.train.conv_loop import photo_psnr, reconstruct_photo
from fsqdeploy.train.loop import METRICS_FILE


def fsq_bytes(model: FSQVAE, photo: np.ndarray, model_hash: bytes) -> int:
    """Length of the .fsq file ``fsqdeploy compress`` writes for a uint8 [H, W, 3] photo."""
    f = model.config.downsample
    padded = pad_to_multiple(photo, f)
    grid = model.encode(torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0))
    header = FsqHeader.for_grid(model_hash, photo.shape[0], photo.shape[1], f, model.levels)
    return len(write_fsq(header, grid_to_cells(grid.numpy()).astype(np.int32)))


def baseline_cell(baseline: JPEG | WebP, photo: np.ndarray, budget: int) -> tuple[str, float | None]:
    """'dB@bpp (qN)' of the bench baseline at no more than ``budget`` bytes, and its dB (None: cannot fit)."""
    row, lowest = baseline.run(photo[None], budget, "photo")
    if row["psnr_vs_input"] is None:
        return f"n/a (smallest {lowest['bytes_mean']:.0f} B)", None
    return f"{row['psnr_vs_input']:.2f}@{row['bits_per_pixel']:.3f} (q{row['quality_mean']:.0f})", row["psnr_vs_input"]


def train_time(run: Path) -> str:
    lines = (run / METRICS_FILE).read_text().splitlines() if (run / METRICS_FILE).is_file() else []
    if not lines:
        return "training time unknown (no metrics.jsonl)"
    last = json.loads(lines[-1])
    return f"trained {last['step']} steps in {last['elapsed_s']:.0f} s, best at step {last['best_step']}"


def report(run: Path) -> list[float | None]:
    """Print one run's table; return its margins vs JPEG (dB, None where JPEG cannot fit)."""
    model = FSQVAE.load(run)
    model_hash = hashlib.sha256((run / WEIGHTS_FILE).read_bytes()).digest()
    levels = ",".join(map(str, model.levels))
    print(f"\n{run}: f={model.config.downsample} channels={','.join(map(str, model.config.channels))} "
          f"levels={levels}; {train_time(run)}")
    print(f"{'photo':<9} {'codec dB':>8} {'bpp':>6} {'bytes':>6}  {'JPEG dB@bpp':<20} {'WebP dB@bpp':<20} vs JPEG")
    photos, margins = sample_photos(), []
    for name, photo in zip(photos.names, photos.test):
        psnr = photo_psnr(reconstruct_photo(model, photo), photo)
        nbytes = fsq_bytes(model, photo, model_hash)
        jpeg, jpeg_db = baseline_cell(JPEG(), photo, nbytes)
        webp, _ = baseline_cell(WebP(), photo, nbytes)
        margin = None if jpeg_db is None else psnr - jpeg_db
        margins.append(margin)
        shown = "JPEG cannot fit" if margin is None else f"{margin:+.2f} dB"
        bpp = nbytes * 8 / (photo.shape[0] * photo.shape[1])
        print(f"{name:<9} {psnr:8.2f} {bpp:6.3f} {nbytes:6d}  {jpeg:<20} {webp:<20} {shown}")
    wins = sum(m is not None and m > 0 for m in margins)
    print(f"beats JPEG at no more bytes on {wins} of {len(margins)} held-out photos")
    return margins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="conv training run directories")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    try:
        for run in args.runs:
            report(run)
    except FSQDeployError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
