#!/usr/bin/env python3
"""Python <-> C++ on test vectors made during the run (ctest `cross_python`).

1. Python writes .fsq files with random levels, image sizes and indices (fsqdeploy.runtime.bitstream),
   each as version 1 patches, version 2 patches (layout 0) or a version 2 latent grid (layout 1);
   the C++ reader gives identical headers and indices (and the same channels-first grid).
2. C++ writes files from the same specs (a grid's through its grid_to_cells); Python reads identical
   indices, and the bytes equal Python's write_fsq byte for byte. Specs with a bad index or size are
   refused by both writers with the same message.
3. Damaged copies (truncations, flipped bits), and intact v2 files this reader must not decode (an
   unknown layout or coding, a prior_hash), are refused by both readers with the same message.
4. Codings 1 and 2 (rANS over a prior, without and with context tables): Python writes
   entropy-coded files with random priors, C++ reads the same indices; C++ writes them from the same
   specs byte for byte; damaged ones (truncated, flipped, a payload that does not decode, no prior,
   a foreign prior) are refused by both with the same message.
5. Tiling: C++ to_patches / from_patches equal runtime/compress.py's, bit for bit.
6. A manifest written with fsqdeploy.artifact (and grown with add_files) reads in C++
   with the same fields; after a file is changed C++ refuses it, naming the problem as
   verify_files does.

Exit 77 (ctest's skip) when this Python cannot import fsqdeploy, unless FSQ_REQUIRE_CROSS is set.
The random seed is printed; FSQ_CROSS_SEED=<seed> repeats a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

SKIP = 77


def fail(message: str) -> None:
    print(f"FAIL: {message}")
    sys.exit(1)


def random_levels(rng: random.Random) -> list[int]:
    kind = rng.random()
    if kind < 0.2:  # powers of two: V is the indices' bits side by side
        return [rng.choice([2, 4, 8, 16, 256, 1024, 32768])] * rng.randint(1, 64)
    if kind < 0.4:  # large levels: V spans hundreds of bits
        return [rng.randint(2, 65535) for _ in range(rng.randint(1, 40))]
    if kind < 0.5:  # long codes
        return [rng.randint(2, 9) for _ in range(rng.randint(100, 400))]
    return [rng.randint(2, 16) for _ in range(rng.randint(1, 16))]


FIXED_LEVELS = [[2], [65535], [3, 5, 7], [8] * 64, [8, 5, 5, 5], [8, 5, 5, 5] * 2, [65535] * 40, [2] * 300, [7] * 30]


# (version, layout) of a case: v1 patches, v2 patches (what paper codecs write), v2 latent grid.
KINDS = [(1, 0), (2, 0), (2, 1)]


def random_case(rng: random.Random, np, levels: list[int], kind: tuple[int, int]) -> dict:
    patch = rng.choice([1, 2, 3, 4, 5, 8, 16, 32, 64, 100, 65535])
    height, width = rng.randint(1, 300), rng.randint(1, 300)
    while -(-height // patch) * -(-width // patch) * len(levels) > 150_000:
        height, width = max(1, height // 2), max(1, width // 2)
    n = -(-height // patch) * -(-width // patch)
    gen = np.random.default_rng(rng.getrandbits(32))
    indices = (gen.random((n, len(levels))) * np.asarray(levels)).astype(np.int32)
    indices[gen.random(n) < 0.2] = np.asarray(levels, dtype=np.int32) - 1  # V = prod(levels) - 1
    indices[gen.random(n) < 0.1] = 0
    return {
        "version": kind[0],
        "layout": kind[1],
        "model_hash": rng.randbytes(32).hex(),
        "image_height": height,
        "image_width": width,
        "cell_size": patch,
        "levels": levels,
        "indices": indices,
    }


SPEC_FIELDS = ("version", "layout", "model_hash", "image_height", "image_width", "cell_size", "levels")


def make_header(bs, spec: dict):
    """The header the spec asks for, by the factory of its version and layout (as fsq-cross does)."""
    if spec["version"] == 1:
        make = bs.FsqHeader.for_image
    else:
        make = bs.FsqHeader.for_grid if spec["layout"] == bs.LAYOUT_GRID else bs.FsqHeader.for_patches
    return make(spec["model_hash"], spec["image_height"], spec["image_width"], spec["cell_size"], spec["levels"])


def with_header_bytes(data: bytes, changes: dict[int, bytes]) -> bytes:
    """``data`` with header bytes replaced (offset -> bytes) and the header CRC32 recomputed: an intact
    file that says something this reader must refuse."""
    import zlib

    header_length = int.from_bytes(data[6:8], "little")
    out = bytearray(data)
    for offset, value in changes.items():
        out[offset : offset + len(value)] = value
    out[header_length - 4 : header_length] = zlib.crc32(bytes(out[: header_length - 4])).to_bytes(4, "little")
    return bytes(out)


def with_payload(data: bytes, payload: bytes) -> bytes:
    """A v2 ``data`` with another payload: payload_length and both CRCs recomputed (an intact file)."""
    import zlib

    header_length = int.from_bytes(data[6:8], "little")
    d = int.from_bytes(data[60:62], "little")
    head = bytearray(data[: header_length - 4])
    head[66 + 2 * d : 74 + 2 * d] = len(payload).to_bytes(8, "little")
    return b"".join([bytes(head), zlib.crc32(bytes(head)).to_bytes(4, "little"), payload,
                     zlib.crc32(payload).to_bytes(4, "little")])


def check_rans(args, bs, np, rng: random.Random, work: Path, cases: list[dict], header_of, coding: int) -> None:
    from fsqdeploy.entropy import Prior, lane_count, quantize_counts
    from fsqdeploy.errors import FSQDeployError

    tag = "rans" if coding == 1 else "context"
    py, cpp_dir, bad = (work / f"{tag}_{sub}" for sub in ("py", "cpp", "damaged"))
    for sub in (py, cpp_dir, bad):
        sub.mkdir()
    # Tables need D * 2^16 slots in each coding-1 decoder: levels of moderate size only; coding 2
    # has L_d^3 entries per column: small levels only, as export/prior.py builds them.
    if coding == 1:
        chosen = [(i, c) for i, c in enumerate(cases) if c["version"] == 2 and len(c["levels"]) <= 64
                  and max(c["levels"]) <= 4096]
    else:
        chosen = [(i, c) for i, c in enumerate(cases) if c["version"] == 2 and len(c["levels"]) <= 16
                  and max(c["levels"]) <= 24]
    priors, lanes = {}, set()

    def random_table(gen, level: int) -> tuple[int, ...]:
        return quantize_counts((gen.random(level) ** 3 * 1000).astype(int) * (gen.random(level) < 0.8))

    for i, case in chosen:
        gen = np.random.default_rng(rng.getrandbits(32))
        tables = [random_table(gen, level) for level in case["levels"]]
        if coding == 1:
            prior = priors[i] = Prior(case["levels"], tables)
        else:  # a lane rule that gives the small test grids several lanes too
            contexts = [[random_table(gen, level) for _ in range(level * level)] for level in case["levels"]]
            prior = priors[i] = Prior(case["levels"], tables, contexts, rng.choice([1, 3, 17, 2048]))
        prior.save(py / f"case{i:03d}.prior.json", {})
        header = header_of(case).with_prior(prior)
        bs.save_fsq(py / f"case{i:03d}.fsq", header, case["indices"], prior)
        n = case["indices"].size
        lanes.add(lane_count(n) if coding == 1 else prior.context_lane_count(n))
    run_tool(args.tool, "read", py, work / "out" / f"{tag}_py.json")
    results = json.loads((work / "out" / f"{tag}_py.json").read_text())
    for (i, case), got in zip(chosen, results):
        if "error" in got:
            fail(f"{tag} case {i}: C++ refused a file Python wrote: {got['error']}")
        if got["coding"] != coding or got["prior_hash"] != priors[i].sha256.hex():
            fail(f"{tag} case {i}: C++ coding {got['coding']} / prior_hash {got['prior_hash'][:8]} differ")
        indices = np.fromfile(got["indices_file"], dtype="<i4").reshape(-1, len(case["levels"]))
        if not np.array_equal(indices, case["indices"]):
            fail(f"{tag} case {i}: C++ indices differ from Python's")
    print(f"coding {coding} python -> c++: {len(chosen)} entropy-coded files (lane counts {sorted(lanes)}), "
          "indices identical")

    specs = []
    for i, case in chosen:
        path = work / "specs" / f"{tag}{i:03d}.i32"
        case["indices"].astype("<i4").tofile(path)
        specs.append({"name": f"case{i:03d}.fsq", **{k: case[k] for k in SPEC_FIELDS}, "indices_file": str(path),
                      "prior_file": str(py / f"case{i:03d}.prior.json")})
    (work / "specs" / f"{tag}.json").write_text(json.dumps(specs))
    run_tool(args.tool, "write", work / "specs" / f"{tag}.json", cpp_dir, work / "out" / f"{tag}_written.json")
    for (i, _), got in zip(chosen, json.loads((work / "out" / f"{tag}_written.json").read_text())):
        if "error" in got:
            fail(f"{tag} case {i}: C++ refused to write: {got['error']}")
        name = f"case{i:03d}.fsq"
        if (cpp_dir / name).read_bytes() != (py / name).read_bytes():
            fail(f"{tag} case {i}: C++ bytes differ from Python's")
    print(f"coding {coding} c++ -> python: {len(chosen)} entropy-coded files byte-identical")

    damaged = {}  # name: (bytes, prior or None)
    for i, case in chosen:
        data, prior = (py / f"case{i:03d}.fsq").read_bytes(), priors[i]
        header_length = header_of(case).header_length
        payload = data[header_length:-4]
        for k in range(2):
            damaged[f"r{i:03d}_cut{k}"] = (data[: rng.randrange(len(data))], prior)
        for k in range(3):
            bit = rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            damaged[f"r{i:03d}_bit{k}"] = (bytes(flipped), prior)
        damaged[f"r{i:03d}_noprior"] = (data, None)
        tables = [list(t) for t in prior.frequencies]
        big = int(np.argmax(tables[0]))
        tables[0][big] -= 1
        tables[0][(big + 1) % len(tables[0])] += 1
        damaged[f"r{i:03d}_foreign"] = (data, Prior(prior.levels, tables, prior.context_frequencies,
                                                    prior.context_symbols_per_lane))
        # intact files (valid CRCs) whose payload does not decode
        damaged[f"r{i:03d}_words"] = (with_payload(data, payload + b"\0\0"), prior)
        damaged[f"r{i:03d}_odd"] = (with_payload(data, payload[:-1]), prior)
        damaged[f"r{i:03d}_state"] = (with_payload(data, b"\xff\xff\0\0" + payload[4:]), prior)
        damaged[f"r{i:03d}_short"] = (with_payload(data, payload[:-2]), prior)
        n = case["indices"].size
        states = 4 * (lane_count(n) if coding == 1 else prior.context_lane_count(n))
        if len(payload) > states:  # a bit flipped in the stream bytes after the lanes' states (a tiny
            cut = bytearray(payload)  # case may have none: its symbols fit in the final states)
            cut[rng.randrange(states, len(cut))] ^= 1 << rng.randrange(8)
            damaged[f"r{i:03d}_word"] = (with_payload(data, bytes(cut)), prior)
    for name, (data, prior) in damaged.items():
        (bad / f"{name}.fsq").write_bytes(data)
        if prior is not None:
            prior.save(bad / f"{name}.prior.json", {})
    run_tool(args.tool, "read", bad, work / "out" / f"{tag}_damaged.json")
    refused = 0
    for got in json.loads((work / "out" / f"{tag}_damaged.json").read_text()):
        name = Path(got["file"]).stem
        data, prior = damaged[name]
        try:
            _, indices = bs.load_fsq(got["file"], prior)
        except FSQDeployError as e:
            python_message = str(e)
        else:  # a flipped word may still decode: then both must read the same indices
            if "error" in got or not name.endswith("_word"):
                fail(f"{name}: Python accepted it, C++ says {got.get('error')}")
            cpp = np.fromfile(got["indices_file"], dtype="<i4").reshape(indices.shape)
            if not np.array_equal(cpp, indices):
                fail(f"{name}: both accepted it but read different indices")
            continue
        if got.get("error") != python_message:
            fail(f"{name}: readers disagree:\n  C++:    {got.get('error')}\n  Python: {python_message}")
        refused += 1
    print(f"coding {coding} damaged: {refused} of {len(damaged)} truncated, flipped, undecodable, prior-less or "
          "foreign-prior files refused by both with the same message (the rest decoded alike)")


def run_tool(tool: str, *args: object) -> None:
    proc = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{tool} {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", required=True, help="the fsq_cross executable")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (emptied first)")
    parser.add_argument("--cases", type=int, default=60, help="random cases besides the fixed ones")
    args = parser.parse_args()

    try:
        import numpy as np

        from fsqdeploy.errors import FSQDeployError
        from fsqdeploy.runtime import bitstream as bs
    except ImportError as e:
        message = (
            f"fsqdeploy is not importable by {sys.executable} ({e}). Note: pip install -e . into this "
            "Python, or configure CMake with -DPython3_EXECUTABLE=<a Python that has it>"
        )
        if os.environ.get("FSQ_REQUIRE_CROSS"):
            fail(message)
        print(f"SKIP: {message}")
        return SKIP

    seed = int(os.environ.get("FSQ_CROSS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"seed {seed} (repeat with FSQ_CROSS_SEED={seed})")
    rng = random.Random(seed)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("py", "cpp", "damaged", "specs", "out", "tiles", "art"):
        (work / sub).mkdir(parents=True)

    levels_list = FIXED_LEVELS + [random_levels(rng) for _ in range(args.cases)]
    # Every fixed level set in every kind; the random ones in a random kind.
    cases = [random_case(rng, np, levels, kind) for levels in FIXED_LEVELS for kind in KINDS]
    cases += [random_case(rng, np, levels, rng.choice(KINDS)) for levels in levels_list[len(FIXED_LEVELS) :]]

    def header_of(case: dict) -> bs.FsqHeader:
        return make_header(bs, case)

    # 1. Python writes, C++ reads.
    for i, case in enumerate(cases):
        bs.save_fsq(work / "py" / f"case{i:03d}.fsq", header_of(case), case["indices"])
    run_tool(args.tool, "read", work / "py", work / "out" / "py.json")
    results = json.loads((work / "out" / "py.json").read_text())
    if len(results) != len(cases):
        fail(f"C++ read {len(results)} files, Python wrote {len(cases)}")
    for i, (case, got) in enumerate(zip(cases, results)):
        if "error" in got:
            fail(f"case {i}: C++ refused a file Python wrote: {got['error']}")
        header = header_of(case)
        fields = ("version", "layout", "coding", "image_height", "image_width", "cell_size", "grid_rows", "grid_cols")
        for field in fields:
            if got[field] != getattr(header, field):
                fail(f"case {i}: C++ {field} {got[field]} != Python {getattr(header, field)}")
        if got["model_hash"] != case["model_hash"] or got["levels"] != case["levels"]:
            fail(f"case {i}: model hash or levels differ")
        indices = np.fromfile(got["indices_file"], dtype="<i4").reshape(-1, len(case["levels"]))
        if not np.array_equal(indices, case["indices"]):
            fail(f"case {i}: C++ indices differ from Python's (levels {case['levels'][:8]}...)")
        if header.spatial:  # C++ cells_to_grid is Python's: the grid [1, D, rows, cols] the decoder reads
            grid = np.fromfile(got["grid_file"], dtype="<i4").reshape(1, -1, header.grid_rows, header.grid_cols)
            if not np.array_equal(grid, bs.cells_to_grid(header, case["indices"])):
                fail(f"case {i}: C++ cells_to_grid differs from Python's")
        elif got["grid_file"] is not None:
            fail(f"case {i}: C++ made a grid of a patch file")
    kinds = {k: sum((c["version"], c["layout"]) == k for c in cases) for k in KINDS}
    print(f"python -> c++: {len(cases)} files (v1, v2 patches, v2 grid: {list(kinds.values())}), headers and "
          "indices identical")

    # 2. C++ writes from the same specs; Python reads, and the bytes equal write_fsq's.
    specs = []
    for i, case in enumerate(cases):
        spec = {"name": f"case{i:03d}.fsq", **{k: case[k] for k in SPEC_FIELDS}}
        if case["layout"] == bs.LAYOUT_GRID:  # C++ gets the encoder's grid and makes the cells itself
            path = work / "specs" / f"case{i:03d}.grid.i32"
            bs.cells_to_grid(header_of(case), case["indices"]).astype("<i4").tofile(path)
            spec["grid_file"] = str(path)
        else:
            path = work / "specs" / f"case{i:03d}.i32"
            case["indices"].astype("<i4").tofile(path)
            spec["indices_file"] = str(path)
        specs.append(spec)
    bad_specs = []  # refused by both writers, with the same message
    for j, case in enumerate(cases[:9]):
        idx = case["indices"].copy()
        idx[-1, -1] = case["levels"][-1] + j  # out of range
        path = work / "specs" / f"bad{j}.i32"
        idx.astype("<i4").tofile(path)
        spec = {k: case[k] for k in SPEC_FIELDS}
        bad_specs.append(({"name": f"bad{j}.fsq", **spec, "indices_file": str(path)}, idx))
    # A zero width in each kind: v1 and v2 word the note differently ("patches" / "cells").
    for j, case in enumerate(cases[:3]):
        spec = {**{k: v for k, v in specs[j].items() if k != "grid_file"}, "name": f"zero{j}.fsq", "image_width": 0}
        spec["indices_file"] = str(work / "specs" / "bad0.i32")
        bad_specs.append((spec, case["indices"]))
    (work / "specs" / "all.json").write_text(json.dumps(specs + [s for s, _ in bad_specs]))
    run_tool(args.tool, "write", work / "specs" / "all.json", work / "cpp", work / "out" / "written.json")
    written = json.loads((work / "out" / "written.json").read_text())
    for i, case in enumerate(cases):
        if "error" in written[i]:
            fail(f"case {i}: C++ refused to write: {written[i]['error']}")
        data = (work / "cpp" / f"case{i:03d}.fsq").read_bytes()
        expected = bs.write_fsq(header_of(case), case["indices"])
        if data != expected:
            fail(f"case {i}: C++ bytes differ from Python's write_fsq ({len(data)} vs {len(expected)} bytes)")
        _, indices = bs.read_fsq(data)
        if not np.array_equal(indices, case["indices"]):
            fail(f"case {i}: Python reads different indices from the C++ file")
    refusals = 0
    for (spec, idx), got in zip(bad_specs, written[len(cases) :]):
        try:
            bs.write_fsq(make_header(bs, spec), idx)
            fail(f"{spec['name']}: Python wrote it")
        except FSQDeployError as e:
            python_message = str(e)
        if got.get("error") != python_message:
            fail(f"{spec['name']}: writers disagree:\n  C++:    {got.get('error')}\n  Python: {python_message}")
        refusals += 1
    print(f"c++ -> python: {len(cases)} files byte-identical to write_fsq; {refusals} bad inputs refused alike")

    # 3. Damaged files: both readers refuse, with the same message.
    damaged = {}
    for i, case in enumerate(cases):
        data = (work / "py" / f"case{i:03d}.fsq").read_bytes()
        header_length = header_of(case).header_length
        for k in range(3):
            damaged[f"case{i:03d}_cut{k}.fsq"] = data[: rng.randrange(len(data))]
        for k in range(5):
            bit = rng.randrange(header_length * 8) if k < 3 else rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            damaged[f"case{i:03d}_bit{k}.fsq"] = bytes(flipped)
        damaged[f"case{i:03d}_tail.fsq"] = data + b"\0"
        damaged[f"case{i:03d}_version.fsq"] = with_header_bytes(data, {4: bytes([rng.choice([0, 3, 4, 255])])})
        if case["version"] == 2:  # intact files (valid CRCs) that say what this reader must not decode
            damaged[f"case{i:03d}_layout.fsq"] = with_header_bytes(data, {48: bytes([rng.randint(2, 255)])})
            damaged[f"case{i:03d}_coding.fsq"] = with_header_bytes(data, {49: bytes([rng.randint(2, 255)])})
            damaged[f"case{i:03d}_coding1.fsq"] = with_header_bytes(data, {49: b"\x01"})  # rANS, but no prior_hash
            prior_at = header_length - 36  # prior_hash: the 32 bytes before the header CRC
            damaged[f"case{i:03d}_prior.fsq"] = with_header_bytes(data, {prior_at + rng.randrange(32): b"\x01"})
            damaged[f"case{i:03d}_as_v1.fsq"] = with_header_bytes(data, {4: b"\x01"})
        else:
            damaged[f"case{i:03d}_as_v2.fsq"] = with_header_bytes(data, {4: b"\x02"})
    for name, data in damaged.items():
        (work / "damaged" / name).write_bytes(data)
    run_tool(args.tool, "read", work / "damaged", work / "out" / "damaged.json")
    for got in json.loads((work / "out" / "damaged.json").read_text()):
        try:
            bs.load_fsq(got["file"])
            fail(f"{got['file']}: Python accepted a damaged file")
        except FSQDeployError as e:
            python_message = str(e)
        if got.get("error") != python_message:
            fail(
                f"{Path(got['file']).name}: readers disagree:\n  C++:    {got.get('error')}\n  Python: {python_message}"
            )
    reasons = {"unsupported layout", "unsupported coding", "prior_hash is not zero", "unsupported format version",
               "prior_hash is zero in an entropy-coded"}
    errors = [got.get("error", "") for got in json.loads((work / "out" / "damaged.json").read_text())]
    seen = {r for error in errors for r in reasons if r in error}
    if seen != reasons:
        fail(f"damaged: no file was refused for {sorted(reasons - seen)}")
    print(f"damaged: {len(damaged)} truncated, bit-flipped, extended or unsupported files refused by both with the "
          "same message")

    # 4. Coding 1: the same cases as entropy-coded v2 files, each with a random prior of its levels.
    check_rans(args, bs, np, rng, work, cases, header_of, coding=1)
    check_rans(args, bs, np, rng, work, cases, header_of, coding=2)

    # 5. Tiling and stitching, against runtime/compress.py.
    from fsqdeploy.images import from_patches, to_patches

    tiles = 0
    for t in range(25):
        h, w, p = rng.randint(1, 70), rng.randint(1, 70), rng.choice([1, 2, 3, 5, 8, 16, 32])
        gen = np.random.default_rng(rng.getrandbits(32))
        image = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image.tofile(work / "tiles" / f"img{t}.u8")
        run_tool(args.tool, "patches", work / "tiles" / f"img{t}.u8", h, w, p, work / "tiles" / f"p{t}.f32")
        expected, rows, cols = to_patches(image, p)
        got = np.fromfile(work / "tiles" / f"p{t}.f32", dtype="<f4")
        if got.tobytes() != np.ascontiguousarray(expected, dtype="<f4").tobytes():
            fail(f"to_patches differs for {h}x{w}, patch {p}")
        # Decoder-like outputs: some outside [0, 1], some exactly on a rounding boundary.
        patches = gen.uniform(-0.2, 1.2, expected.shape).astype(np.float32)
        flat = patches.reshape(-1)
        flat[::7] = ((gen.integers(0, 255, flat[::7].shape) + 0.5) / 255).astype(np.float32)
        patches.tofile(work / "tiles" / f"d{t}.f32")
        run_tool(args.tool, "stitch", work / "tiles" / f"d{t}.f32", rows, cols, h, w, p, work / "tiles" / f"o{t}.u8")
        got_image = np.fromfile(work / "tiles" / f"o{t}.u8", dtype=np.uint8).reshape(h, w, 3)
        if not np.array_equal(got_image, from_patches(patches, rows, cols, h, w)):
            fail(f"from_patches differs for {h}x{w}, patch {p}")
        tiles += 1
    print(f"tiling: {tiles} images, to_patches and from_patches identical to runtime/compress.py")

    # 6. Manifests written by the exporter's code, read by C++: a paper artifact from before the conv
    # codec (no arch: paper by default) grown with add_files, and a conv artifact (the spatial io).
    from fsqdeploy.artifact import Manifest, add_files, file_entry, io_contract, verify_files, write_manifest

    graph_files = ("encoder.onnx", "decoder.onnx", "checkpoint/config.json", "checkpoint/model.safetensors")

    def write_art(art: Path, levels: list[int], stages: int, image_size: int, **fields: object) -> None:
        for name in graph_files:
            (art / name).parent.mkdir(parents=True, exist_ok=True)
            (art / name).write_bytes(rng.randbytes(rng.randint(1, 5000)))
        spatial = fields.get("arch") == "conv"
        write_manifest(art, {
            "format": "fsqdeploy-artifact", "format_version": 1, "model_id": rng.randbytes(32).hex(), **fields,
            "levels": levels, "latent_dim": len(levels) // stages, "code_width": len(levels),
            "image_size": image_size, "stages": stages, "temperature": 0.1, "opset": 18, "inline": False,
            "io": io_contract(image_size, len(levels), spatial=spatial),
            "files": {n: file_entry(art / n) for n in graph_files}, "parity": {"passed": True},
        })  # fmt: skip

    def compare_manifest(art: Path, label: str) -> dict:
        python_side = Manifest.load(art)
        run_tool(args.tool, "manifest", art, work / "out" / f"{label}.json")
        got = json.loads((work / "out" / f"{label}.json").read_text())
        fields = ("model_id", "arch", "downsample", "spatial", "levels", "latent_dim", "code_width", "image_size",
                  "stages", "temperature", "opset", "files")  # fmt: skip
        for field in fields:
            if got[field] != getattr(python_side, field):
                fail(f"{label} manifest {field}: C++ {got[field]!r} != Python {getattr(python_side, field)!r}")
        return got

    art = work / "art"
    write_art(art, [8, 5, 5, 5] * 2, 2, 64)
    for name in ("encoder.fp16.plan", "encoder.fp16.plan.json"):
        (art / name).write_bytes(rng.randbytes(100))
    add_files(art, ["encoder.fp16.plan", "encoder.fp16.plan.json"], {"fp16": {"passed": True}})
    got = compare_manifest(art, "paper")
    if got["engines"] != ["encoder.fp16.plan"] or got["arch"] != "paper" or got["downsample"] != 16:
        fail(f"paper manifest: engines {got['engines']}, arch {got['arch']}, downsample {got['downsample']}")
    data = bytearray((art / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (art / "decoder.onnx").write_bytes(bytes(data))
    problem = verify_files(Manifest.load(art), art)[0]
    proc = subprocess.run(
        [args.tool, "manifest", str(art), str(work / "out" / "m2.json")], capture_output=True, text=True
    )
    if proc.returncode != 2 or problem not in proc.stderr:
        fail(f"C++ did not refuse the changed file as Python does ({problem!r}): {proc.stderr.strip()}")

    conv = work / "art-conv"
    write_art(conv, [8, 8, 8, 5, 5, 5], 1, 64, arch="conv", downsample=8)
    got = compare_manifest(conv, "conv")
    if not got["spatial"] or got["downsample"] != 8:
        fail(f"conv manifest: spatial {got['spatial']}, downsample {got['downsample']}")
    unknown = work / "art-unknown"
    write_art(unknown, [8, 5, 5, 5], 1, 32, arch="vit", downsample=16)
    proc = subprocess.run(
        [args.tool, "manifest", str(unknown), str(work / "out" / "m3.json")], capture_output=True, text=True
    )
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 2 or len(lines) != 1 or "has arch 'vit', which this reader does not know" not in lines[0]:
        fail(f"C++ did not refuse an unknown arch in one line: exit {proc.returncode}, {proc.stderr.strip()!r}")
    print(
        f"manifest: paper (arch absent) and conv manifests written by fsqdeploy.artifact, read by C++ with the "
        f"same fields; a changed file refused ({problem}); an unknown arch refused in one line"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
