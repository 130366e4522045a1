"""The entropy coders (static interleaved rANS, fsqdeploy/entropy.py: coding 1 with per-channel tables,
coding 2 with context tables) on a trained conv artifact: speed on one core, and size against the
tables' cross-entropy on the held-out photos.

    python benchmarks/entropy_coding.py ART [--size 768x512] [--repeats 20] [--cpp-tool PATH] [--json OUT]

ART is an exported conv artifact with a prior (``fsqdeploy export`` writes ART/prior.json). The
process pins itself to one CPU core first, so every time below is one core's.

1. Speed: a held-out photo (rocket) resized to ``--size`` (width x height) is encoded by the codec
   (not timed); its indices are entropy-coded and decoded ``--repeats`` times by Python, in each
   coding the prior has, and the best time of each is printed. With the C++ tool (``fsq_cross`` of
   a runtime/cpp build: ``--cpp-tool``, else $FSQ_CPP_BUILD_DIR/tests/fsq_cross or the default
   .ci/cpp.sh build) the same indices are coded by C++ too, which must give the same payload (its
   sha256 is compared).
2. Size: every held-out photo through ``Codec.encode_image``; in each coding, the payload's bytes
   against the ideal size under its tables (sum of -log2(freq / 2^16) over the symbols, in bytes), the
   whole file (what ``compress`` writes)
   against the fixed-rate file, and the photo's own per-channel entropy (what tables fitted to that
   photo alone would reach: the distance is the prior's mismatch, not the coder's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def pin_one_core() -> int:
    """Run on one core (the lowest this process may use); numpy/ONNX threads see one CPU."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    return core


def best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def own_entropy_bits(indices: np.ndarray, levels: list[int]) -> float:
    """The indices' size under per-channel tables fitted to them alone (their empirical entropy)."""
    bits = 0.0
    for d, level in enumerate(levels):
        counts = np.bincount(indices[:, d], minlength=level).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        bits -= float((counts[counts > 0] * np.log2(p)).sum())
    return bits


def find_cpp_tool(given: str | None) -> Path | None:
    candidates = [given] if given else [
        os.path.join(os.environ.get("FSQ_CPP_BUILD_DIR", ""), "tests", "fsq_cross"),
        os.path.join(os.environ.get("TMPDIR", "/tmp"), "fsqdeploy-cpp", "gcc", "tests", "fsq_cross"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    if given:
        raise SystemExit(f"--cpp-tool {given!r} is not an executable fsq_cross")
    return None


class Coding:
    """One coding's coder on one latent grid: payload, decode, lane count, ideal bits."""

    def __init__(self, number: int, prior, rows: int, cols: int) -> None:
        from fsqdeploy import entropy

        self.number, self.prior, self.rows, self.cols = number, prior, rows, cols
        self.entropy = entropy

    def encode(self, indices: np.ndarray) -> bytes:
        if self.number == 1:
            return self.entropy.encode(indices, self.prior)
        return self.entropy.encode_context(indices, self.rows, self.cols, self.prior)

    def decode(self, payload: bytes) -> np.ndarray:
        if self.number == 1:
            return self.entropy.decode(payload, self.prior, self.rows * self.cols)
        return self.entropy.decode_context(payload, self.prior, self.rows, self.cols)

    def lanes(self, symbols: int) -> int:
        return self.entropy.lane_count(symbols) if self.number == 1 else self.prior.context_lane_count(symbols)

    def ideal_bits(self, indices: np.ndarray) -> float:
        if self.number == 1:
            return self.prior.cross_entropy_bits(indices)
        return self.prior.context_cross_entropy_bits(indices.reshape(self.rows, self.cols, -1))


def codings(prior) -> list[int]:
    return [1, 2] if prior.coding == 2 else [1]


def speed(codec, prior, size: tuple[int, int], repeats: int, tool: Path | None) -> list[dict[str, Any]]:
    from PIL import Image

    from fsqdeploy.data import load_photos

    splits = load_photos("sample")
    photo = splits.test[list(splits.names).index("rocket")] if "rocket" in splits.names else splits.test[0]
    photo = np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC))
    header, indices = codec.encode_image(photo)
    rows = []
    for number in codings(prior):
        coder = Coding(number, prior, header.grid_rows, header.grid_cols)
        payload = coder.encode(indices)
        assert np.array_equal(coder.decode(payload), indices)
        row: dict[str, Any] = {
            "coding": number, "size": f"{size[0]}x{size[1]}", "cells": len(indices), "symbols": int(indices.size),
            "lanes": coder.lanes(indices.size), "payload_bytes": len(payload),
            "python_encode_ms": best_ms(lambda c=coder: c.encode(indices), repeats),
            "python_decode_ms": best_ms(lambda c=coder, p=payload: c.decode(p), repeats),
        }
        row["python_total_ms"] = row["python_encode_ms"] + row["python_decode_ms"]
        if tool is not None:
            grid = [str(header.grid_rows), str(header.grid_cols)] if number == 2 else []
            with tempfile.TemporaryDirectory() as tmp:
                prior.save(Path(tmp) / "prior.json", {})
                np.ascontiguousarray(indices, dtype="<i4").tofile(Path(tmp) / "indices.i32")
                subprocess.run([str(tool), "rans-time", str(Path(tmp) / "prior.json"), str(Path(tmp) / "indices.i32"),
                                str(len(indices)), str(repeats), str(Path(tmp) / "out.json"), *grid], check=True)
                cpp = json.loads((Path(tmp) / "out.json").read_text())
            row.update({"cpp_encode_ms": cpp["encode_ms"], "cpp_decode_ms": cpp["decode_ms"],
                        "cpp_total_ms": cpp["encode_ms"] + cpp["decode_ms"],
                        "cpp_same_bytes": cpp["sha256"] == hashlib.sha256(payload).hexdigest()})
            row["python_over_cpp"] = row["python_total_ms"] / row["cpp_total_ms"]
        rows.append(row)
    return rows


def sizes(codec, prior) -> list[dict[str, Any]]:
    from fsqdeploy.data import load_photos
    from fsqdeploy.runtime.bitstream import CODING_FIXED, NO_PRIOR, write_fsq

    splits = load_photos("sample")
    rows = []
    for name, photo in zip(splits.names, splits.test):
        header, indices, data = codec.encode_file(photo)
        fixed = len(write_fsq(replace(header, coding=CODING_FIXED, prior_hash=NO_PRIOR), indices))
        pixels = header.image_height * header.image_width
        row: dict[str, Any] = {
            "photo": name, "size": f"{header.image_width}x{header.image_height}", "symbols": int(indices.size),
            "own_entropy_bytes": own_entropy_bits(indices, header.levels) / 8, "coding": header.coding,
            "file_bytes": len(data), "fixed_rate_file_bytes": fixed, "bpp": 8 * len(data) / pixels,
            "fixed_rate_bpp": 8 * fixed / pixels,
        }
        for number in codings(prior):
            coder = Coding(number, prior, header.grid_rows, header.grid_cols)
            payload, ideal = len(coder.encode(indices)), coder.ideal_bits(indices) / 8
            row[f"coding{number}"] = {"lanes": coder.lanes(indices.size), "payload_bytes": payload,
                                      "ideal_bytes": ideal, "overhead_pct": 100 * (payload / ideal - 1)}
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("art", type=Path, help="an exported conv artifact with ART/prior.json")
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the timed photo")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cpp-tool", default=None, help="fsq_cross of a runtime/cpp build")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    core = pin_one_core()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from fsqdeploy.runtime.codec import Codec

    with Codec.load(args.art, "onnxruntime", threads=1) as codec:
        if codec.prior is None:
            raise SystemExit(f"'{args.art}' has no prior (ART/prior.json): export a conv run again")
        tool = find_cpp_tool(args.cpp_tool)
        fast = speed(codec, codec.prior, (width, height), args.repeats, tool)
        held_out = sizes(codec, codec.prior)
    print(f"one core (cpu {core}); {fast[0]['size']} photo: {fast[0]['cells']} cells, {fast[0]['symbols']} symbols")
    for row in fast:
        print(f"  coding {row['coding']}: K = {row['lanes']} lanes, payload {row['payload_bytes']} bytes")
        print(f"    python: encode {row['python_encode_ms']:.1f} ms + decode {row['python_decode_ms']:.1f} ms = "
              f"{row['python_total_ms']:.1f} ms (best of {args.repeats})")
        if "cpp_total_ms" in row:
            print(f"    c++:    encode {row['cpp_encode_ms']:.2f} ms + decode {row['cpp_decode_ms']:.2f} ms = "
                  f"{row['cpp_total_ms']:.2f} ms ({row['python_over_cpp']:.0f}x faster), same bytes: "
                  f"{row['cpp_same_bytes']}")
        else:
            print("    c++:    no fsq_cross found (build runtime/cpp, or pass --cpp-tool)")
    print("held-out photos: each coding's payload vs its tables' cross-entropy; the file compress writes")
    numbers = codings(codec.prior)
    head = "".join(f" {'K':>3} {'payload':>8} {'ideal':>9} {'over':>7}" for _ in numbers)
    print(f"  {'photo':<10} {'size':>8}" + "".join(f"  {'coding ' + str(n):<29}" for n in numbers))
    print(f"  {'':<10} {'':>8}{head} {'own H':>8} {'coding':>6} {'file':>6} {'fixed':>6} {'bpp':>6} {'fixed':>6}")
    for r in held_out:
        cells = "".join(f" {r[f'coding{n}']['lanes']:>3} {r[f'coding{n}']['payload_bytes']:>8} "
                        f"{r[f'coding{n}']['ideal_bytes']:>9.1f} {r[f'coding{n}']['overhead_pct']:>6.2f}%"
                        for n in numbers)
        print(f"  {r['photo']:<10} {r['size']:>8}{cells} {r['own_entropy_bytes']:>8.1f} {r['coding']:>6} "
              f"{r['file_bytes']:>6} {r['fixed_rate_file_bytes']:>6} {r['bpp']:>6.3f} {r['fixed_rate_bpp']:>6.3f}")
    if args.json:
        args.json.write_text(json.dumps({"speed": fast, "held_out": held_out}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from fsqdeploy.errors import FSQDeployError

    try:
        sys.exit(main())
    except FSQDeployError as e:  # a bad artifact or input: its one line, as heldout_vs_jpeg.py does
        raise SystemExit(str(e)) from None
