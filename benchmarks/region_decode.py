"""Decoding a region of a large image (``fsqdeploy decompress --region``) against decoding all of it,
side by side, with a conv artifact.

    python benchmarks/region_decode.py ART [--size 4000x3000] [--regions 256,512,1000] [--repeats 3]
                                           [--backend auto]

A held-out sample photo (rocket) resized to ``--size`` (width x height) is compressed as compress
writes it. Then, best of ``--repeats``: the whole file decoded; the entropy decode alone (read_fsq,
which a region still needs: the grid is coded as a whole); and a centred square region of each side
in ``--regions``. Printed per region: its time, the whole decode's time over it, and how many of its
pixels equal the whole decode's crop (the rest differ by float32 rounding in the decoder, at most
one level: the same as tiling).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def best_s(fn, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def benchmark_photo(width: int, height: int) -> np.ndarray:
    from PIL import Image

    from fsqdeploy.data import sample_photos

    photos = sample_photos()
    rocket = photos.test[photos.names.index("rocket")]
    return np.asarray(Image.fromarray(rocket).resize((width, height), Image.Resampling.BICUBIC))


def measure(codec, image: np.ndarray, sides: list[int], repeats: int) -> dict[str, Any]:
    """The whole decode, the entropy decode and one centred region per side: times (s) and agreement."""
    from fsqdeploy.runtime.bitstream import read_fsq

    data = codec.compress(image)
    whole_s, whole = best_s(lambda: codec.decompress(data), repeats)
    entropy_s, _ = best_s(lambda: read_fsq(data, codec.prior), repeats)
    height, width = image.shape[:2]
    rows = []
    for side in sides:
        w, h = min(side, width), min(side, height)
        x, y = (width - w) // 2, (height - h) // 2
        box = (x, y, w, h)
        region_s, part = best_s(lambda box=box: codec.decompress(data, box), repeats)
        apart = np.abs(part.astype(np.int16) - whole[y : y + h, x : x + w])
        rows.append({"region": [x, y, w, h], "seconds": region_s, "speedup": whole_s / region_s,
                     "pixels_equal": float((apart == 0).mean()), "max_levels_apart": int(apart.max())})
    return {"image": [width, height], "bytes": len(data), "whole_s": whole_s, "entropy_decode_s": entropy_s,
            "regions": rows}


def main(argv: list[str] | None = None) -> int:
    from fsqdeploy.runtime.codec import Codec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("art", type=Path)
    parser.add_argument("--size", default="4000x3000", help="width x height of the test photo")
    parser.add_argument("--regions", default="256,512,1000", help="sides of the centred square regions")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with Codec.load(args.art, args.backend) as codec:
        if not codec.spatial:
            print(f"region_decode: '{args.art}' is a patch model; a region decodes only the patches under it, "
                  "so there is no halo to measure. Pass a conv artifact", file=sys.stderr)
            return 2
        r = measure(codec, benchmark_photo(width, height), [int(v) for v in args.regions.split(",")], args.repeats)
        print(f"{r['image'][0]}x{r['image'][1]} photo, {r['bytes']:,} bytes, [{codec.backend}], best of {args.repeats}")
        print(f"{'decode':>22}  {'seconds':>8}  {'whole / it':>10}  pixels equal to the whole decode's")
        print(f"{'whole image':>22}  {r['whole_s']:8.3f}  {1.0:10.1f}")
        entropy_s = r["entropy_decode_s"]
        print(f"{'entropy decode alone':>22}  {entropy_s:8.3f}  {r['whole_s'] / entropy_s:10.1f}")
        for row in r["regions"]:
            x, y, w, h = row["region"]
            print(f"{f'{w}x{h} at {x},{y}':>22}  {row['seconds']:8.3f}  {row['speedup']:10.1f}  "
                  f"{100 * row['pixels_equal']:.5f}%, the rest {row['max_levels_apart']} level(s) apart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
