"""The coding-1 entropy coder (static interleaved rANS, fsqdeploy/entropy.py) on a trained conv artifact:
speed on one core, and size against the tables' cross-entropy on the held-out photos.

    python benchmarks/entropy_coding.py ART [--size 768x512] [--repeats 20] [--cpp-tool PATH] [--json OUT]

ART is an exported conv artifact with a prior (``fsqdeploy export`` writes ART/prior.json). The
process pins itself to one CPU core first, so every time below is one core's.

1. Speed: a held-out photo (rocket) resized to ``--size`` (width x height) is encoded by the codec
   (not timed); its indices are entropy-coded and decoded ``--repeats`` times by Python and the best
   time of each is printed. With the C++ tool (``fsq_cross`` of a runtime/cpp build: ``--cpp-tool``,
   else $FSQ_CPP_BUILD_DIR/tests/fsq_cross or the default .ci/cpp.sh build) the same indices are
   coded by C++ too, which must give the same payload (its sha256 is compared).
2. Size: every held-out photo through ``Codec.encode_image``; the payload's bytes against the ideal
   size under the tables (sum of -log2(freq / 2^16) over the symbols, in bytes), the whole file
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


def speed(codec, prior, size: tuple[int, int], repeats: int, tool: Path | None) -> dict[str, Any]:
    from PIL import Image

    from fsqdeploy import entropy
    from fsqdeploy.data import load_photos

    splits = load_photos("sample")
    photo = splits.test[list(splits.names).index("rocket")] if "rocket" in splits.names else splits.test[0]
    photo = np.asarray(Image.fromarray(photo).resize(size, Image.BICUBIC))
    _, indices = codec.encode_image(photo)
    payload = entropy.encode(indices, prior)
    assert np.array_equal(entropy.decode(payload, prior, len(indices)), indices)
    row: dict[str, Any] = {
        "size": f"{size[0]}x{size[1]}", "cells": len(indices), "symbols": int(indices.size),
        "lanes": entropy.lane_count(indices.size), "payload_bytes": len(payload),
        "python_encode_ms": best_ms(lambda: entropy.encode(indices, prior), repeats),
        "python_decode_ms": best_ms(lambda: entropy.decode(payload, prior, len(indices)), repeats),
    }
    row["python_total_ms"] = row["python_encode_ms"] + row["python_decode_ms"]
    if tool is not None:
        with tempfile.TemporaryDirectory() as tmp:
            prior.save(Path(tmp) / "prior.json", {})
            np.ascontiguousarray(indices, dtype="<i4").tofile(Path(tmp) / "indices.i32")
            subprocess.run([str(tool), "rans-time", str(Path(tmp) / "prior.json"), str(Path(tmp) / "indices.i32"),
                            str(len(indices)), str(repeats), str(Path(tmp) / "out.json")], check=True)
            cpp = json.loads((Path(tmp) / "out.json").read_text())
        row.update({"cpp_encode_ms": cpp["encode_ms"], "cpp_decode_ms": cpp["decode_ms"],
                    "cpp_total_ms": cpp["encode_ms"] + cpp["decode_ms"],
                    "cpp_same_bytes": cpp["sha256"] == hashlib.sha256(payload).hexdigest()})
        row["python_over_cpp"] = row["python_total_ms"] / row["cpp_total_ms"]
    return row


def sizes(codec, prior) -> list[dict[str, Any]]:
    from fsqdeploy import entropy
    from fsqdeploy.data import load_photos
    from fsqdeploy.runtime.bitstream import CODING_FIXED, NO_PRIOR, write_fsq

    splits = load_photos("sample")
    rows = []
    for name, photo in zip(splits.names, splits.test):
        header, indices = codec.encode_image(photo)
        payload = len(entropy.encode(indices, prior))
        ideal = prior.cross_entropy_bits(indices) / 8
        fixed = len(write_fsq(replace(header, coding=CODING_FIXED, prior_hash=NO_PRIOR), indices))
        coded = len(write_fsq(header, indices, prior))
        pixels = header.image_height * header.image_width
        rows.append({
            "photo": name, "size": f"{header.image_width}x{header.image_height}", "symbols": int(indices.size),
            "lanes": entropy.lane_count(indices.size), "payload_bytes": payload, "ideal_bytes": ideal,
            "overhead_pct": 100 * (payload / ideal - 1),
            "own_entropy_bytes": own_entropy_bits(indices, header.levels) / 8,
            "file_bytes": coded, "fixed_rate_file_bytes": fixed, "bpp": 8 * coded / pixels,
            "fixed_rate_bpp": 8 * fixed / pixels,
        })
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
    print(f"one core (cpu {core}); {fast['size']} photo: {fast['cells']} cells, {fast['symbols']} symbols, "
          f"K = {fast['lanes']} lanes, payload {fast['payload_bytes']} bytes")
    print(f"  python: encode {fast['python_encode_ms']:.1f} ms + decode {fast['python_decode_ms']:.1f} ms = "
          f"{fast['python_total_ms']:.1f} ms (best of {args.repeats})")
    if "cpp_total_ms" in fast:
        print(f"  c++:    encode {fast['cpp_encode_ms']:.2f} ms + decode {fast['cpp_decode_ms']:.2f} ms = "
              f"{fast['cpp_total_ms']:.2f} ms ({fast['python_over_cpp']:.0f}x faster), same bytes: "
              f"{fast['cpp_same_bytes']}")
    else:
        print("  c++:    no fsq_cross found (build runtime/cpp, or pass --cpp-tool)")
    print("held-out photos: payload vs the tables' cross-entropy")
    print(f"  {'photo':<10} {'size':>8} {'K':>3} {'payload':>8} {'ideal':>9} {'over':>7} {'own H':>8} "
          f"{'file':>6} {'fixed':>6} {'bpp':>6} {'fixed':>6}")
    for r in held_out:
        print(f"  {r['photo']:<10} {r['size']:>8} {r['lanes']:>3} {r['payload_bytes']:>8} {r['ideal_bytes']:>9.1f} "
              f"{r['overhead_pct']:>6.2f}% {r['own_entropy_bytes']:>8.1f} {r['file_bytes']:>6} "
              f"{r['fixed_rate_file_bytes']:>6} {r['bpp']:>6.3f} {r['fixed_rate_bpp']:>6.3f}")
    if args.json:
        args.json.write_text(json.dumps({"speed": fast, "held_out": held_out}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
