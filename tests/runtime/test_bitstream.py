"""The .fsq format: packing round trips, the golden vector, and every way a reader refuses a file."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsqdeploy.entropy import Prior
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.runtime.bitstream import (
    FsqHeader,
    bits_per_patch,
    cells_to_grid,
    check_model,
    file_length,
    grid_to_cells,
    load_fsq,
    pack_indices,
    read_fsq,
    save_fsq,
    unpack_indices,
    write_fsq,
)

# The golden file of docs/bitstream.md: a 5x7 image, 4-pixel patches (grid 2x2), levels [3, 5, 7]
# (7 bits per patch), model hash bytes 0..31. The C++ reader and writer test against the same hex.
GOLDEN_HASH = bytes(range(32))
GOLDEN_LEVELS = (3, 5, 7)
GOLDEN_INDICES = np.array([[0, 0, 0], [2, 4, 6], [1, 2, 3], [2, 0, 5]])
GOLDEN_PAYLOAD = "0034ad09"  # V = 0, 104, 52, 77 at bits 0, 7, 14, 21
GOLDEN_HEX = (
    "46535142" "01" "00" "5200"                          # magic, version, flags, header_length 82
    "000102030405060708090a0b0c0d0e0f"                  # model_hash
    "101112131415161718191a1b1c1d1e1f"
    "05000000" "07000000" "0400" "02000000" "02000000"  # H, W, patch, rows, cols
    "0300" "0300" "0500" "0700"                         # D, levels
    "07000000" "0400000000000000"                       # bits_per_patch, payload_length
    "7d0737be"                                          # header CRC32
    "0034ad09"                                          # payload
    "50e85360"                                          # payload CRC32
)  # fmt: skip


def golden_header() -> FsqHeader:
    return FsqHeader.for_image(GOLDEN_HASH, 5, 7, 4, GOLDEN_LEVELS)


def build(
    *,
    magic: bytes = b"FSQB",
    version: int = 1,
    flags: int = 0,
    header_length: int | None = None,
    size: tuple[int, int, int] = (5, 7, 4),
    grid: tuple[int, int] = (2, 2),
    levels: tuple[int, ...] = GOLDEN_LEVELS,
    bits: int = 7,
    payload: bytes = bytes.fromhex(GOLDEN_PAYLOAD),
    payload_length: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A file assembled field by field from the documented layout, with correct CRCs."""
    d = len(levels)
    head = b"".join([
        magic,
        struct.pack("<BBH", version, flags, 76 + 2 * d if header_length is None else header_length),
        GOLDEN_HASH,
        struct.pack("<IIHIIH", size[0], size[1], size[2], grid[0], grid[1], d),
        struct.pack(f"<{d}H", *levels),
        struct.pack("<IQ", bits, len(payload) if payload_length is None else payload_length),
    ])  # fmt: skip
    crc = struct.pack("<I", zlib.crc32(head))
    return head + crc + payload + struct.pack("<I", zlib.crc32(payload)) + trailing


# --- packing ---------------------------------------------------------------------------------

levels_strategy = st.lists(
    st.one_of(st.integers(2, 300), st.sampled_from([255, 256, 257, 4096, 65534, 65535])),
    min_size=1,
    max_size=80,
)


@st.composite
def levels_and_indices(draw: st.DrawFn) -> tuple[list[int], np.ndarray]:
    levels = draw(levels_strategy)
    n = draw(st.integers(0, 50))
    seed = draw(st.integers(0, 2**32 - 1))
    indices = np.random.default_rng(seed).integers(0, levels, size=(n, len(levels)))
    if n:  # make sure the extremes appear: all zeros and all maxima
        indices[0] = 0
        indices[-1] = np.asarray(levels) - 1
    return levels, indices


@pytest.mark.parametrize(
    ("levels", "bits"),
    [([2], 1), ([3], 2), ([4], 2), ([5], 3), ([3, 5], 4), ([2, 2, 2], 3), ([65535], 16), ([8] * 64, 192),
     ([8, 5, 5, 5], 10), ([65535] * 300, 4800)],
)  # fmt: skip
def test_bits_per_patch_examples(levels: list[int], bits: int) -> None:
    assert bits_per_patch(levels) == bits


@given(levels_strategy)
def test_bits_per_patch_is_ceil_log2_of_codebook(levels: list[int]) -> None:
    bits, size = bits_per_patch(levels), math.prod(levels)
    assert 2 ** (bits - 1) < size <= 2**bits  # the exact definition
    total = sum(math.log2(level) for level in levels)
    if size & (size - 1) == 0:  # a power of two: log2 of each level is exact, so is the sum
        assert bits == total
    elif abs(total - round(total)) > 1e-6:  # far enough from an integer for float ceil to be right
        assert bits == math.ceil(total)


@given(levels_and_indices())
@settings(max_examples=150, deadline=None)
def test_pack_unpack_round_trip(case: tuple[list[int], np.ndarray]) -> None:
    levels, indices = case
    data = pack_indices(indices, levels)
    assert len(data) == math.ceil(len(indices) * bits_per_patch(levels) / 8)
    out = unpack_indices(data, levels, len(indices))
    assert out.dtype == np.int32 and out.shape == indices.shape
    np.testing.assert_array_equal(out, indices)


@given(levels_and_indices())
@settings(max_examples=50, deadline=None)
def test_pack_matches_reference_big_int(case: tuple[list[int], np.ndarray]) -> None:
    """The spec read literally: V = sum idx_d * prod_{j<d} L_j, patch i at bits [i*b, (i+1)*b)."""
    levels, indices = case
    bits, stream = bits_per_patch(levels), 0
    for i, row in enumerate(indices):
        value, radix = 0, 1
        for idx, level in zip(row.tolist(), levels):
            value, radix = value + idx * radix, radix * level
        stream |= value << (i * bits)
    assert pack_indices(indices, levels) == stream.to_bytes(math.ceil(len(indices) * bits / 8), "little")


def test_pack_worked_example_of_the_docs() -> None:
    # levels [3, 5]: V = idx_0 + 3*idx_1 -> 14, 3, 10 as 4-bit fields, LSB first: 0x3e, 0x0a.
    indices = np.array([[2, 4], [0, 1], [1, 3]])
    assert pack_indices(indices, [3, 5]).hex() == "3e0a"
    assert pack_indices(indices[:1], [3, 5]) == bytes([14])
    np.testing.assert_array_equal(unpack_indices(bytes.fromhex("3e0a"), [3, 5], 3), indices)


def test_first_index_is_least_significant_digit() -> None:
    assert pack_indices(np.array([[1, 0]]), [3, 5]) == b"\x01"
    assert pack_indices(np.array([[0, 1]]), [3, 5]) == b"\x03"


def test_zero_patches() -> None:
    assert pack_indices(np.zeros((0, 3), dtype=np.int64), [3, 5, 7]) == b""
    assert unpack_indices(b"", [3, 5, 7], 0).shape == (0, 3)


def test_accepts_any_integer_dtype_and_lists() -> None:
    expected = pack_indices(np.array([[2, 4], [0, 1]]), [3, 5])
    for dtype in (np.uint8, np.int16, np.uint32, np.int64, np.uint64):
        assert pack_indices(np.array([[2, 4], [0, 1]], dtype=dtype), [3, 5]) == expected
    assert pack_indices([[2, 4], [0, 1]], (np.int64(3), 5)) == expected


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (np.array([[0, 0], [2, 5]]), r"indices\[1, 1\] = 5 is outside \[0, 5\)"),
        (np.array([[0, -1], [3, 0]]), r"indices\[0, 1\] = -1 is outside \[0, 5\)"),
        (np.array([[3, 0]], dtype=np.uint8), r"indices\[0, 0\] = 3 is outside \[0, 3\)"),
        (np.array([[2**64 - 1, 0]], dtype=np.uint64), r"indices\[0, 0\] = 18446744073709551615 is outside"),
        (np.array([0, 1]), r"indices have shape \[2\], expected \[N, 2\]"),
        (np.zeros((2, 3), dtype=np.int64), r"indices have shape \[2, 3\], expected \[N, 2\]"),
        (np.zeros((1, 2, 2), dtype=np.int64), r"indices have shape \[1, 2, 2\]"),
        (np.zeros((2, 2), dtype=np.float32), "indices have dtype float32, expected an integer dtype"),
        (np.zeros((2, 2), dtype=bool), "indices have dtype bool"),
        ([[0, 1], [2]], "indices have dtype object"),
    ],
)
def test_pack_rejects_bad_indices(indices: np.ndarray, match: str) -> None:
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        pack_indices(indices, [3, 5])


@pytest.mark.parametrize(
    ("levels", "match"),
    [([], "levels is empty"), ([3, 1], r"levels\[1\] = 1 is not an int in \[2, 65535\]"),
     ([65536], r"levels\[0\] = 65536"), ([2.0], r"levels\[0\] = 2.0"), (8, "levels must be a sequence")],
)  # fmt: skip
def test_rejects_bad_levels(levels: object, match: str) -> None:
    with pytest.raises(FSQDeployError, match=match):
        bits_per_patch(levels)  # type: ignore[arg-type]
    with pytest.raises(FSQDeployError, match=match):
        unpack_indices(b"", levels, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "count", "match"),
    [
        (bytes.fromhex("3e0a"), 2, "payload has 2 bytes, expected 1 for 2 patches of 4 bits"),
        (bytes.fromhex("3e1a"), 3, "padding bits after the last patch are not zero"),
        (bytes.fromhex("3f0a"), 3, r"patch 0 decodes to 15, outside the codebook \[0, 15\)"),
        (bytes.fromhex("3e"), -1, "count = -1"),
    ],
)
def test_unpack_rejects_corrupt_payload(data: bytes, count: int, match: str) -> None:
    with pytest.raises(FSQDeployError, match=match):
        unpack_indices(data, [3, 5], count)


# --- the file ---------------------------------------------------------------------------------


def test_golden_vector() -> None:
    data = write_fsq(golden_header(), GOLDEN_INDICES)
    assert data.hex() == GOLDEN_HEX
    assert build() == data  # the same bytes assembled from the documented layout, field by field
    header, indices = read_fsq(bytes.fromhex(GOLDEN_HEX))
    assert header == golden_header()
    np.testing.assert_array_equal(indices, GOLDEN_INDICES)


@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    patch=st.sampled_from([1, 7, 16, 32, 64]),
    levels=st.lists(st.integers(2, 17), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_file_round_trip(height: int, width: int, patch: int, levels: list[int], seed: int) -> None:
    header = FsqHeader.for_image(GOLDEN_HASH.hex(), height, width, patch, levels)
    assert (header.grid_rows, header.grid_cols) == (math.ceil(height / patch), math.ceil(width / patch))
    indices = np.random.default_rng(seed).integers(0, levels, size=(header.num_patches, len(levels)))
    data = write_fsq(header, indices)
    assert len(data) == 76 + 2 * len(levels) + math.ceil(len(indices) * bits_per_patch(levels) / 8) + 4
    read_header, read_indices = read_fsq(data)
    assert read_header == header and read_header.model_hash == GOLDEN_HASH
    np.testing.assert_array_equal(read_indices, indices)


def test_odd_image_size_grid() -> None:
    header = FsqHeader.for_image(GOLDEN_HASH, 33, 47, 32, [8] * 64)
    assert (header.grid_rows, header.grid_cols, header.num_patches) == (2, 2, 4)
    indices = np.arange(4 * 64).reshape(4, 64) % 8
    header2, indices2 = read_fsq(write_fsq(header, indices))
    assert (header2.image_height, header2.image_width, header2.patch_size) == (33, 47, 32)
    np.testing.assert_array_equal(indices2, indices)


def test_every_truncation_is_refused() -> None:
    data = bytes.fromhex(GOLDEN_HEX)
    for length in range(len(data)):
        with pytest.raises(FSQDeployError, match="^bitstream: .*(truncated|too short)"):
            read_fsq(data[:length])


def assert_every_flip_refused(data: bytes, prior: Prior | None = None) -> None:
    """Each of the file's 8 * len(data) single flipped bits is refused in one "bitstream:" line."""
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FSQDeployError, match="^bitstream: "):
            read_fsq(bytes(flipped), prior)


def test_every_single_bit_flip_is_refused() -> None:
    # Guaranteed, not likely: magic/version/flags/D/header_length are checked directly (D and
    # header_length against each other, so neither can move the CRC fields), every other header bit
    # is under the header CRC32 and every payload bit under the payload CRC32 (a CRC32 catches every
    # single-bit error), and a flip inside a stored CRC makes it disagree with the data.
    assert_every_flip_refused(bytes.fromhex(GOLDEN_HEX))


REFUSED = {  # name: (file, what the error must say)
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(100), r"not an \.fsq file \(it starts with b'\\x89PNG'"),
    "three-bytes": (b"FSQ", "file is truncated or too short: 3 bytes"),
    "version": (build(version=3), "unsupported format version 3"),
    "flags": (build(flags=1), "flags byte is 0x01, expected 0"),
    "header-length": (build(header_length=84), "header_length 84 does not match D = 3"),
    "no-levels": (build(levels=()), "header_length 76 does not match D = 0"),
    "grid": (build(grid=(2, 1)), r"invalid header: grid 2x1 does not tile a 5x7 image .* \(expected 2x2\)"),
    "zero-height": (build(size=(0, 7, 4), grid=(0, 2)), "invalid header: image_height = 0"),
    "zero-patch": (build(size=(5, 7, 0)), "invalid header: patch_size = 0"),
    "level-1": (build(levels=(3, 1, 7)), r"invalid header: levels\[1\] = 1"),
    "bits": (build(bits=8), r"bits_per_patch is 8 but levels \[3, 5, 7\] need 7"),
    "long-payload": (build(payload=bytes(5)), "payload_length is 5, expected 4 for 4 patches of 7 bits"),
    "payload-length": (build(payload_length=5), "payload_length is 5, expected 4 for 4 patches of 7 bits"),
    "huge-payload-length": (
        build(payload_length=2**64 - 1),
        "payload_length is 18446744073709551615, expected 4",
    ),
    "trailing": (build(trailing=b"\0"), "1 trailing bytes after the payload CRC"),
    "payload-crc": (
        build()[:-1] + bytes([build()[-1] ^ 0x80]),
        r"corrupted payload \(payload CRC32 mismatch\)",
    ),
    "header-crc": (build()[:40] + b"\x06" + build()[41:], r"corrupted header \(header CRC32 mismatch\)"),
    "padding": (build(payload=bytes.fromhex("0034ad19")), "padding bits after the last patch are not zero"),
    "out-of-range": (
        build(payload=bytes.fromhex("7f34ad09")),
        r"patch 0 decodes to 127, outside .*\[0, 105\)",
    ),
}


@pytest.mark.parametrize(("data", "match"), REFUSED.values(), ids=REFUSED.keys())
def test_reader_refuses(data: bytes, match: str) -> None:
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        read_fsq(data)


@given(
    size=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1)),
    grid=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    levels=st.lists(st.integers(0, 2**16 - 1), max_size=6),
    bits=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=40),
    payload_length=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
@settings(max_examples=300, deadline=None)
def test_reader_never_crashes_on_files_with_valid_crcs(
    size: tuple[int, int, int],
    grid: tuple[int, int],
    levels: list[int],
    bits: int,
    payload: bytes,
    payload_length: int | None,
) -> None:
    data = build(
        size=size, grid=grid, levels=tuple(levels), bits=bits, payload=payload, payload_length=payload_length
    )
    try:
        header, indices = read_fsq(data)
    except FSQDeployError as err:
        assert str(err).startswith("bitstream: ") and "\n" not in str(err)
    else:
        assert write_fsq(header, indices) == data


def test_reader_refuses_non_bytes() -> None:
    with pytest.raises(FSQDeployError, match="data must be bytes, got str"):
        read_fsq("FSQB")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((GOLDEN_HASH, 5, 7, 4, 2, 1, (3, 5)), r"grid 2x1 does not tile a 5x7 image .* \(expected 2x2\)"),
        ((GOLDEN_HASH, 0, 7, 4, 0, 2, (3, 5)), r"image_height = 0 is not an int in \[1, 4294967295\]"),
        ((GOLDEN_HASH, 5, 7, 70000, 1, 1, (3, 5)), r"patch_size = 70000"),
        ((GOLDEN_HASH[:31], 5, 7, 4, 2, 2, (3, 5)), "model hash must be a sha256 digest"),
        (("zz" * 32, 5, 7, 4, 2, 2, (3, 5)), "model hash must be a sha256 digest"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (8,) * 40000), "40000 levels do not fit the header"),
    ],
)
def test_header_validation(args: tuple, match: str) -> None:
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        FsqHeader(*args)


def test_write_needs_one_row_per_tile() -> None:
    with pytest.raises(FSQDeployError, match="indices have 3 rows but the 2x2 grid needs 4"):
        write_fsq(golden_header(), GOLDEN_INDICES[:3])
    with pytest.raises(FSQDeployError, match=r"indices\[1, 2\] = 7 is outside \[0, 7\)"):
        write_fsq(golden_header(), GOLDEN_INDICES + [[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])


def test_check_model() -> None:
    header = golden_header()
    check_model(header, GOLDEN_HASH, [3, 5, 7])
    check_model(header, GOLDEN_HASH.hex(), (3, 5, 7))  # manifests store hex
    with pytest.raises(
        FSQDeployError,
        match=r"^bitstream: file was made by another model \(hash 00010203\.\. != ffffffff\.\.\)\. "
        r"Note: decompress with the model that compressed it$",
    ):
        check_model(header, b"\xff" * 32, [3, 5, 7])
    with pytest.raises(FSQDeployError, match=r"levels \[3, 5, 7\] but the model has \[3, 5, 8\]"):
        check_model(header, GOLDEN_HASH, [3, 5, 8])


# --- files on disk ----------------------------------------------------------------------------


def test_save_load_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out" / "image.fsq"
    save_fsq(target, golden_header(), GOLDEN_INDICES)
    assert sorted(p.name for p in target.parent.iterdir()) == ["image.fsq"]
    assert target.read_bytes().hex() == GOLDEN_HEX
    header, indices = load_fsq(target)
    assert header == golden_header()
    np.testing.assert_array_equal(indices, GOLDEN_INDICES)


def test_save_refuses_bad_input_without_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "image.fsq"
    with pytest.raises(FSQDeployError, match="outside"):
        save_fsq(target, golden_header(), GOLDEN_INDICES + 10)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "image.fsq"
    target.write_bytes(b"old")

    def broken_write(self: Path, data: bytes) -> int:
        with self.open("wb") as f:  # a partial temp file, then the disk fills up
            f.write(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(FSQDeployError, match=r"cannot write '.*image\.fsq': No space left on device"):
        save_fsq(target, golden_header(), GOLDEN_INDICES)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["image.fsq"] and target.read_bytes() == b"old"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FSQDeployError, match=r"cannot read '.*missing\.fsq'"):
        load_fsq(tmp_path / "missing.fsq")
    bad = tmp_path / "bad.fsq"
    bad.write_bytes(bytes.fromhex(GOLDEN_HEX)[:-1])
    with pytest.raises(FSQDeployError, match=r"^bitstream: '.*bad\.fsq': file is truncated: 89 bytes"):
        load_fsq(bad)


# --- version 2: the layout byte (patches or one latent grid), the coding byte, prior_hash ---------

# The v2 golden file of docs/bitstream.md: the v1 golden's image, levels, hash and indices, as a
# latent grid (layout 1, f = 4: grid 2x2, cell (r, c) = indices[0, :, r, c]). The C++ tests assert
# the same hex. The layout-0 twin differs in the layout byte and hence the header CRC only.
GOLDEN_V2_HEX = (
    "46535142" "02" "00" "7400"                          # magic, version 2, flags, header_length 116
    "000102030405060708090a0b0c0d0e0f"                  # model_hash
    "101112131415161718191a1b1c1d1e1f"
    "05000000" "07000000"                               # H 5, W 7
    "01" "00" "0400" "02000000" "02000000"              # layout 1, coding 0, cell_size 4, rows, cols
    "0300" "0300" "0500" "0700"                         # D, levels
    "07000000" "0400000000000000"                       # bits_per_cell, payload_length
    "0000000000000000000000000000000000000000000000000000000000000000"  # prior_hash (coding 0)
    "49c5ace9"                                          # header CRC32
    "0034ad09"                                          # payload
    "50e85360"                                          # payload CRC32
)  # fmt: skip
GOLDEN_V2_PATCHES_HEX = GOLDEN_V2_HEX.replace("0100040002", "0000040002").replace("49c5ace9", "dce89966")
GOLDEN_GRID = GOLDEN_INDICES.reshape(1, 2, 2, 3).transpose(0, 3, 1, 2)  # [1, D, rows, cols]


def golden_grid_header() -> FsqHeader:
    return FsqHeader.for_grid(GOLDEN_HASH, 5, 7, 4, GOLDEN_LEVELS)


def build_v2(
    *,
    version: int = 2,
    flags: int = 0,
    header_length: int | None = None,
    size: tuple[int, int] = (5, 7),
    layout: int = 1,
    coding: int = 0,
    cell_size: int = 4,
    grid: tuple[int, int] = (2, 2),
    levels: tuple[int, ...] = GOLDEN_LEVELS,
    bits: int = 7,
    prior: bytes = bytes(32),
    payload: bytes = bytes.fromhex(GOLDEN_PAYLOAD),
    payload_length: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A v2 file assembled field by field from the documented layout, with correct CRCs."""
    d = len(levels)
    head = b"".join([
        b"FSQB",
        struct.pack("<BBH", version, flags, 110 + 2 * d if header_length is None else header_length),
        GOLDEN_HASH,
        struct.pack("<IIBBHIIH", size[0], size[1], layout, coding, cell_size, grid[0], grid[1], d),
        struct.pack(f"<{d}H", *levels),
        struct.pack("<IQ", bits, len(payload) if payload_length is None else payload_length),
        prior,
    ])  # fmt: skip
    crc = struct.pack("<I", zlib.crc32(head))
    return head + crc + payload + struct.pack("<I", zlib.crc32(payload)) + trailing


def test_golden_vector_v2_grid() -> None:
    header = golden_grid_header()
    assert (header.version, header.layout, header.coding, header.cell_size) == (2, 1, 0, 4)
    assert header.spatial and header.header_length == 116 and header.num_cells == 4
    data = write_fsq(header, GOLDEN_INDICES)
    assert data.hex() == GOLDEN_V2_HEX and len(data) == 124
    assert build_v2() == data
    read_header, cells = read_fsq(data)
    assert read_header == header
    np.testing.assert_array_equal(cells, GOLDEN_INDICES)
    # cell (r, c) holds indices[0, :, r, c] of the channels-first grid
    np.testing.assert_array_equal(cells_to_grid(read_header, cells), GOLDEN_GRID)
    np.testing.assert_array_equal(grid_to_cells(GOLDEN_GRID), GOLDEN_INDICES)
    assert cells_to_grid(read_header, cells)[0, :, 0, 1].tolist() == [2, 4, 6]
    assert cells_to_grid(read_header, cells)[0, :, 1, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("layout", [0, 1])
def test_the_grey_flag_is_flags_bit_0_and_round_trips(layout: int) -> None:
    """A grey file differs from the golden one in the flags byte and the header CRC only."""
    plain = FsqHeader._sized(GOLDEN_HASH, 5, 7, 4, GOLDEN_LEVELS, 2, layout)
    grey = replace(plain, grey=True)
    data = write_fsq(grey, GOLDEN_INDICES)
    assert data == build_v2(layout=layout, flags=1)
    golden = write_fsq(plain, GOLDEN_INDICES)
    differ = [i for i in range(len(data)) if data[i] != golden[i]]
    assert differ[0] == 5 and set(differ) <= {5, *range(112, 116)}
    read_header, cells = read_fsq(data)
    assert read_header == grey and read_header.grey and not read_fsq(golden)[0].grey
    np.testing.assert_array_equal(cells, GOLDEN_INDICES)
    with pytest.raises(FSQDeployError, match=r"flags byte is 0x01, expected 0 \(reserved\)"):
        read_fsq(build(flags=1))  # version 1 has no flags


def test_golden_vector_v2_patches() -> None:
    header = FsqHeader.for_patches(GOLDEN_HASH, 5, 7, 4, GOLDEN_LEVELS)
    assert (header.version, header.layout, header.patch_size) == (2, 0, 4) and not header.spatial
    data = write_fsq(header, GOLDEN_INDICES)
    assert data.hex() == GOLDEN_V2_PATCHES_HEX
    assert build_v2(layout=0) == data
    assert read_fsq(data)[0] == header


def docs_hex_blocks() -> list[str]:
    """docs/bitstream.md's code blocks, whitespace removed: where the spec shows golden bytes."""
    text = (Path(__file__).parents[2] / "docs" / "bitstream.md").read_text()
    return ["".join(block.split()) for block in text.split("```")[1::2]]


def test_docs_carry_the_golden_hex() -> None:
    """docs/bitstream.md is the spec the C++ tests copy the hex from: it must show these bytes."""
    blocks = docs_hex_blocks()
    for hex_string in (GOLDEN_HEX, GOLDEN_V2_HEX, GOLDEN_V2_PATCHES_HEX):
        assert hex_string in blocks


def test_v1_and_v2_of_one_image_hold_the_same_payload() -> None:
    v1, v2 = bytes.fromhex(GOLDEN_HEX), bytes.fromhex(GOLDEN_V2_PATCHES_HEX)
    assert v1[-8:] == v2[-8:] and len(v2) - len(v1) == 34
    np.testing.assert_array_equal(read_fsq(v1)[1], read_fsq(v2)[1])


@pytest.mark.parametrize("golden", [GOLDEN_V2_HEX, GOLDEN_V2_PATCHES_HEX], ids=["grid", "patches"])
def test_every_truncation_of_v2_is_refused(golden: str) -> None:
    data = bytes.fromhex(golden)
    for length in range(len(data)):
        with pytest.raises(FSQDeployError, match="^bitstream: .*(truncated|too short)"):
            read_fsq(data[:length])


@pytest.mark.parametrize("golden", [GOLDEN_V2_HEX, GOLDEN_V2_PATCHES_HEX], ids=["grid", "patches"])
def test_every_single_bit_flip_of_v2_is_refused(golden: str) -> None:
    # As for v1: the bytes read before the header CRC (magic, version, flags, header_length, D) are
    # checked on their own, and one flipped bit turns version 2 into 0, 3, 6, 10, ... (refused),
    # never into 1 (and v1's 1 never into 2). Every other bit is under a CRC32.
    assert_every_flip_refused(bytes.fromhex(golden))


REFUSED_V2 = {  # name: (file, what the error must say)
    "flags": (build_v2(flags=0x80), r"flags byte is 0x80, expected 0 or 0x01 \(bit 0: grey; the others reserved\)"),
    "flags-grey-and-more": (build_v2(flags=0x03), "flags byte is 0x03, expected 0 or 0x01"),
    "header-length-v1": (build_v2(header_length=82), r"header_length 82 does not match D = 3 levels \(expected 110"),
    "no-levels": (build_v2(levels=()), "header_length 110 does not match D = 0"),
    "layout": (build_v2(layout=2), r"unsupported layout 2 \(this reader knows 0, patches, and 1, a latent grid\)"),
    "coding": (build_v2(coding=3, payload_length=3),
               r"unsupported coding 3 \(this reader knows 0, fixed-rate packing, 1, rANS with the artifact's "
               r"prior, and 2, rANS with its context tables\)"),
    "coding-2-no-prior": (build_v2(coding=2), r"prior_hash is zero in an entropy-coded \(coding 2\) file"),
    "coding-1-no-prior": (build_v2(coding=1), r"prior_hash is zero in an entropy-coded \(coding 1\) file"),
    "prior-hash": (build_v2(prior=b"\x01" + bytes(31)), r"prior_hash is not zero in a fixed-rate \(coding 0\) file"),
    "grid": (build_v2(grid=(1, 2)), r"invalid header: grid 1x2 does not tile a 5x7 image with 4-pixel latent cells"),
    "zero-width": (build_v2(size=(5, 0), grid=(2, 0)), "invalid header: image_width = 0"),
    "zero-cell": (build_v2(cell_size=0), "invalid header: cell_size = 0"),
    "level-1": (build_v2(levels=(3, 1, 7)), r"invalid header: levels\[1\] = 1"),
    "bits": (build_v2(bits=8), r"bits_per_cell is 8 but levels \[3, 5, 7\] need 7"),
    "payload-length": (build_v2(payload_length=5), "payload_length is 5, expected 4 for 4 cells of 7 bits"),
    "trailing": (build_v2(trailing=b"\0\0"), "2 trailing bytes after the payload CRC"),
    "truncated": (build_v2()[:-1], "file is truncated: 123 bytes, expected 124"),
    "payload-crc": (build_v2()[:-1] + bytes([build_v2()[-1] ^ 1]), r"corrupted payload \(payload CRC32 mismatch\)"),
    "header-crc": (build_v2()[:48] + b"\x00" + build_v2()[49:], r"corrupted header \(header CRC32 mismatch\)"),
    "padding": (build_v2(payload=bytes.fromhex("0034ad19")), "padding bits after the last cell are not zero"),
    "out-of-range": (build_v2(payload=bytes.fromhex("7f34ad09")), r"cell 0 decodes to 127, outside .*\[0, 105\)"),
}  # fmt: skip


@pytest.mark.parametrize(("data", "match"), REFUSED_V2.values(), ids=REFUSED_V2.keys())
def test_reader_refuses_v2(data: bytes, match: str) -> None:
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        read_fsq(data)


@given(
    size=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    layout=st.integers(0, 3),
    coding=st.sampled_from([0, 0, 1, 255]),
    cell_size=st.integers(0, 2**16 - 1),
    grid=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    levels=st.lists(st.integers(0, 2**16 - 1), max_size=6),
    bits=st.integers(0, 2**32 - 1),
    prior=st.sampled_from([bytes(32), b"\xff" * 32]),
    payload=st.binary(max_size=40),
    payload_length=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
@settings(max_examples=300, deadline=None)
def test_v2_reader_never_crashes_on_files_with_valid_crcs(
    size: tuple[int, int], layout: int, coding: int, cell_size: int, grid: tuple[int, int], levels: list[int],
    bits: int, prior: bytes, payload: bytes, payload_length: int | None,
) -> None:
    data = build_v2(size=size, layout=layout, coding=coding, cell_size=cell_size, grid=grid, levels=tuple(levels),
                    bits=bits, prior=prior, payload=payload, payload_length=payload_length)
    try:
        header, indices = read_fsq(data)
    except FSQDeployError as err:
        assert str(err).startswith("bitstream: ") and "\n" not in str(err)
    else:
        assert header.version == 2 and write_fsq(header, indices) == data


@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    cell=st.sampled_from([1, 4, 8, 16, 32]),
    layout=st.sampled_from([0, 1]),
    levels=st.lists(st.integers(2, 17), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_v2_file_round_trip(height: int, width: int, cell: int, layout: int, levels: list[int], seed: int) -> None:
    make = FsqHeader.for_grid if layout else FsqHeader.for_patches
    header = make(GOLDEN_HASH.hex(), height, width, cell, levels)
    assert (header.grid_rows, header.grid_cols) == (math.ceil(height / cell), math.ceil(width / cell))
    indices = np.random.default_rng(seed).integers(0, levels, size=(header.num_cells, len(levels)))
    data = write_fsq(header, indices)
    n_payload = math.ceil(len(indices) * bits_per_patch(levels) / 8)
    assert len(data) == 110 + 2 * len(levels) + n_payload + 4 == file_length(levels, len(indices), version=2)
    read_header, read_indices = read_fsq(data)
    assert read_header == header and read_header.layout == layout
    np.testing.assert_array_equal(read_indices, indices)


def test_grid_cells_round_trip_non_square() -> None:
    grid = np.random.default_rng(0).integers(0, 5, size=(1, 3, 4, 7))
    header = FsqHeader.for_grid(GOLDEN_HASH, 29, 50, 8, [5, 5, 5])
    assert (header.grid_rows, header.grid_cols) == (4, 7)
    cells = grid_to_cells(grid)
    assert cells.shape == (28, 3)
    np.testing.assert_array_equal(cells[2 * 7 + 5], grid[0, :, 2, 5])  # row-major: cell r * cols + c
    np.testing.assert_array_equal(cells_to_grid(header, read_fsq(write_fsq(header, cells))[1]), grid)
    with pytest.raises(FSQDeployError, match=r"a latent grid must have shape \[1, D, rows, cols\], got \[2, 3, 4, 7\]"):
        grid_to_cells(np.concatenate([grid, grid]))


def test_file_length_per_version() -> None:
    assert file_length(GOLDEN_LEVELS, 4, version=1) == len(bytes.fromhex(GOLDEN_HEX)) == 90
    assert file_length(GOLDEN_LEVELS, 4, version=2) == len(bytes.fromhex(GOLDEN_V2_HEX)) == 124
    assert file_length(GOLDEN_LEVELS, 4) == 124  # the version writers write
    with pytest.raises(FSQDeployError, match="version 3 is not one of"):
        file_length(GOLDEN_LEVELS, 4, version=3)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 3), r"version = 3 is not one of \[1, 2\]"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 1, 1), r"unsupported layout 1 \(version 1 knows 0 \(patches\)\)"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 2), r"unsupported layout 2 \(version 2 knows 0"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 1, 3), r"unsupported coding 3 \(version 2 knows 0"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 1, 0, 2), r"unsupported coding 2 \(version 1 knows 0, fixed-rate"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 1, 0, 1), r"unsupported coding 1 \(version 1 knows 0, fixed-rate"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 1, 1), "prior_hash is zero in an entropy-coded"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 1, 0, b"\1" * 32), "prior_hash is not zero in a fixed-rate"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 1, 1, b"\1" * 31), "prior_hash must be 32 raw bytes"),
        ((GOLDEN_HASH, 5, 7, 0, 2, 2, (3, 5), 2, 1), r"cell_size = 0 is not an int in \[1, 65535\]"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 3, (3, 5), 2, 1), r"grid 2x3 does not tile a 5x7 image with 4-pixel latent cells"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (8,) * 32713, 2, 1), "32713 levels do not fit the header"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 1, 0, 0, bytes(32), True), "version 1 has no grey flag"),
        ((GOLDEN_HASH, 5, 7, 4, 2, 2, (3, 5), 2, 1, 0, bytes(32), 1), "grey = 1 is not a bool"),
    ],
)
def test_header_validation_v2(args: tuple, match: str) -> None:
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        FsqHeader(*args)


def test_v1_header_keeps_its_names_and_limits() -> None:
    header = golden_header()
    assert (header.version, header.layout, header.patch_size, header.num_patches) == (1, 0, 4, 4)
    FsqHeader(GOLDEN_HASH, 5, 7, 4, 2, 2, (8,) * 32713)  # v1's header_length still fits its u16


# --- coding 1: static interleaved rANS over the artifact's prior -----------------------------------

# docs/bitstream.md's coding-1 golden: the v2 grid golden's image, levels, hash and indices, coded
# with the prior of tests/runtime/test_entropy.py (GOLDEN_TABLES). The C++ tests assert the same hex.
GOLDEN_RANS_HEX = (
    "46535142" "02" "00" "7400"                          # magic, version 2, flags, header_length 116
    "000102030405060708090a0b0c0d0e0f"                  # model_hash
    "101112131415161718191a1b1c1d1e1f"
    "05000000" "07000000"                               # H 5, W 7
    "01" "01" "0400" "02000000" "02000000"              # layout 1, coding 1, cell_size 4, rows, cols
    "0300" "0300" "0500" "0700"                         # D, levels
    "07000000" "0c00000000000000"                       # bits_per_cell, payload_length 12
    "1b8a26fe2f899439e9efd51432a60200ce541d9f1e99c53161126442375ea29d"  # prior_hash
    "d0f42924"                                          # header CRC32
    "0164dd01" "40ffd7ffa581fc00"                       # payload: lane 0's state, 8 bytes
    "f72a56e1"                                          # payload CRC32
)  # fmt: skip


def golden_rans() -> tuple[FsqHeader, Prior]:
    from test_entropy import golden_prior

    prior = golden_prior()
    return golden_grid_header().with_prior(prior), prior


def test_golden_vector_rans() -> None:
    header, prior = golden_rans()
    assert (header.coding, header.prior_hash) == (1, prior.sha256)
    data = write_fsq(header, GOLDEN_INDICES, prior)
    assert data.hex() == GOLDEN_RANS_HEX and len(data) == 132
    assert build_v2(coding=1, prior=prior.sha256, payload=bytes.fromhex("0164dd0140ffd7ffa581fc00")) == data
    read_header, cells = read_fsq(data, prior)
    assert read_header == header
    np.testing.assert_array_equal(cells, GOLDEN_INDICES)
    assert GOLDEN_RANS_HEX in docs_hex_blocks()


def test_rans_file_needs_its_own_prior() -> None:
    from test_entropy import GOLDEN_TABLES

    header, prior = golden_rans()
    data = bytes.fromhex(GOLDEN_RANS_HEX)
    with pytest.raises(FSQDeployError, match=r"^bitstream: file is entropy-coded \(coding 1, prior 1b8a26fe..\) "
                                             r"and no prior was given\. Note: decompress with the artifact"):
        read_fsq(data)
    other = Prior(GOLDEN_LEVELS, (GOLDEN_TABLES[0], GOLDEN_TABLES[1], (2, 1, 3, 65524, 2, 2, 2)))
    with pytest.raises(FSQDeployError, match=r"^bitstream: file was coded with a foreign prior \(prior_hash "
                                             rf"1b8a26fe.. != this artifact's {other.sha256.hex()[:8]}..\)"):
        read_fsq(data, other)
    with pytest.raises(FSQDeployError, match="foreign prior"):
        write_fsq(header, GOLDEN_INDICES, other)
    with pytest.raises(FSQDeployError, match="no prior was given"):
        write_fsq(header, GOLDEN_INDICES)
    wider = Prior((3, 5, 7, 2), (*GOLDEN_TABLES, (1, 65535)))
    mismatched = replace(header, prior_hash=wider.sha256)
    with pytest.raises(FSQDeployError, match=r"file has levels \[3, 5, 7\] but its prior has \[3, 5, 7, 2\]"):
        write_fsq(mismatched, GOLDEN_INDICES, wider)
    with pytest.raises(FSQDeployError, match=r"^bitstream: '.*x\.fsq': file was coded with a foreign prior"):
        path = Path(__file__).parent / "x.fsq"
        try:
            path.write_bytes(data)
            load_fsq(path, other)
        finally:
            path.unlink()
    # a fixed-rate file reads as before with or without a prior
    assert read_fsq(bytes.fromhex(GOLDEN_V2_HEX), prior)[0].coding == 0
    np.testing.assert_array_equal(read_fsq(bytes.fromhex(GOLDEN_HEX), prior)[1], GOLDEN_INDICES)


def assert_every_cut_and_flip_refused(data: bytes, prior: Prior) -> None:
    """Every truncation and every single flipped bit of an entropy-coded file is one line, refused."""
    for length in range(len(data)):
        with pytest.raises(FSQDeployError, match="^bitstream: .*(truncated|too short)"):
            read_fsq(data[:length], prior)
    assert_every_flip_refused(data, prior)


def test_every_truncation_and_bit_flip_of_rans_is_refused() -> None:
    assert_every_cut_and_flip_refused(bytes.fromhex(GOLDEN_RANS_HEX), golden_rans()[1])


REFUSED_RANS = {  # intact files (CRCs valid) whose coded payload is wrong
    "short": ("0164dd", "entropy-coded payload has 3 bytes, fewer than its 1 lane states of 4 bytes"),
    "low-state": ("ffffff0040ffd7ffa581fc00", "lane 0 starts in state 16777215, below 2.24"),
    "ends-early": ("0164dd0140ffd7ffa581fc", "entropy-coded payload ends after 7 bytes, before the last symbol"),
    "left-over": ("0164dd0140ffd7ffa581fc0000", "entropy-coded payload has 1 bytes left after the last symbol"),
    "final-state": ("0164dd0140ffd7ffa581fc01", "lane 0 ends in state 16777217, not 2.24"),
}


def test_a_grid_the_payload_cannot_hold_is_refused_before_decoding() -> None:
    _, prior = golden_rans()
    side = 2**32 - 1
    data = build_v2(coding=1, prior=prior.sha256, size=(side, side), cell_size=1, grid=(side, side),
                    payload=bytes.fromhex("00000001") * 32)
    with pytest.raises(FSQDeployError, match=r"^bitstream: entropy-coded payload of 128 bytes cannot hold "
                                             r"55340232195358851075 symbols under this prior"):
        read_fsq(data, prior)


@pytest.mark.parametrize(("payload", "match"), REFUSED_RANS.values(), ids=REFUSED_RANS.keys())
def test_reader_refuses_bad_rans_payloads(payload: str, match: str) -> None:
    _, prior = golden_rans()
    data = build_v2(coding=1, prior=prior.sha256, payload=bytes.fromhex(payload))
    with pytest.raises(FSQDeployError, match=r"^bitstream: " + match):
        read_fsq(data, prior)


@given(
    height=st.integers(1, 200),
    width=st.integers(1, 200),
    cell=st.sampled_from([1, 4, 8, 16]),
    levels=st.lists(st.integers(2, 40), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_rans_file_round_trip(height: int, width: int, cell: int, levels: list[int], seed: int) -> None:
    from fsqdeploy.entropy import quantize_counts

    rng = np.random.default_rng(seed)
    prior = Prior(levels, [quantize_counts(rng.integers(0, 50, level) ** 2) for level in levels])
    header = FsqHeader.for_grid(GOLDEN_HASH, height, width, cell, levels).with_prior(prior)
    indices = rng.integers(0, levels, size=(header.num_cells, len(levels)))
    data = write_fsq(header, indices, prior)
    read_header, read_indices = read_fsq(data, prior)
    assert read_header == header and read_header.coding == 1
    np.testing.assert_array_equal(read_indices, indices)


# --- coding 2: rANS with context tables ------------------------------------------------------------

# docs/bitstream.md's coding-2 golden: a 6 x 10 image, f = 4 (a 2 x 3 grid), levels [3, 2], coded with
# the prior of tests/runtime/test_context_coding.py (context_prior). The C++ tests assert the same hex.
GOLDEN_CONTEXT_HEX = (
    "46535142" "02" "00" "7200"                          # magic, version 2, flags, header_length 114
    "000102030405060708090a0b0c0d0e0f"                  # model_hash
    "101112131415161718191a1b1c1d1e1f"
    "06000000" "0a000000"                               # H 6, W 10
    "01" "02" "0400" "02000000" "03000000"              # layout 1, coding 2, cell_size 4, rows 2, cols 3
    "0200" "0300" "0200"                                # D, levels
    "03000000" "0d00000000000000"                       # bits_per_cell, payload_length 13
    "54e3398a1c71a90646e757502ddbe637b4c0b3e6f5e0f467f4ba1e2a6376529b"  # prior_hash
    "45b14d4c"                                          # header CRC32
    "3b008c2a" "cf18df2082281afd98"                     # payload: lane 0's state, 9 bytes
    "d17690b8"                                          # payload CRC32
)  # fmt: skip


def golden_context() -> tuple[FsqHeader, Prior, np.ndarray]:
    from test_context_coding import GOLDEN_GRID, GOLDEN_LEVELS, context_prior

    prior = context_prior(GOLDEN_LEVELS)
    header = FsqHeader.for_grid(GOLDEN_HASH, 6, 10, 4, GOLDEN_LEVELS).with_prior(prior)
    return header, prior, GOLDEN_GRID.reshape(-1, 2)


def test_golden_vector_context() -> None:
    header, prior, cells = golden_context()
    assert (header.coding, header.prior_hash) == (2, prior.sha256)
    data = write_fsq(header, cells, prior)
    assert data.hex() == GOLDEN_CONTEXT_HEX and len(data) == 131
    read_header, read_cells = read_fsq(data, prior)
    assert read_header == header
    np.testing.assert_array_equal(read_cells, cells)
    assert GOLDEN_CONTEXT_HEX in docs_hex_blocks()


def test_context_file_needs_its_own_prior_and_context_tables() -> None:
    header, prior, cells = golden_context()
    data = bytes.fromhex(GOLDEN_CONTEXT_HEX)
    with pytest.raises(FSQDeployError, match=r"^bitstream: file is entropy-coded \(coding 2, prior 54e3398a..\) "
                                             r"and no prior was given"):
        read_fsq(data)
    plain = Prior(prior.levels, prior.frequencies)  # the same per-channel tables, no context tables
    with pytest.raises(FSQDeployError, match=r"foreign prior \(prior_hash 54e3398a.. != this artifact's"):
        read_fsq(data, plain)
    # coding 1 with the same prior is a different file, and each reads back
    one = write_fsq(header.with_prior(prior, coding=1), cells, prior)
    assert one[49] == 1 and read_fsq(one, prior)[0].coding == 1
    np.testing.assert_array_equal(read_fsq(one, prior)[1], cells)
    with pytest.raises(FSQDeployError, match=r"has no context tables, so it cannot code coding 2"):
        write_fsq(header.with_prior(plain, coding=2), cells, plain)
    with pytest.raises(FSQDeployError, match=r"with_prior needs coding 1 or 2, got 0"):
        header.with_prior(prior, coding=0)
    with pytest.raises(FSQDeployError, match=r"indices have 5 rows but the 2x3 grid needs 6"):
        write_fsq(header, cells[:5], prior)


def test_every_truncation_and_bit_flip_of_a_context_file_is_refused() -> None:
    assert_every_cut_and_flip_refused(bytes.fromhex(GOLDEN_CONTEXT_HEX), golden_context()[1])


@given(
    height=st.integers(1, 120),
    width=st.integers(1, 120),
    cell=st.sampled_from([1, 4, 8, 16]),
    levels=st.lists(st.integers(2, 9), min_size=1, max_size=5),
    per_lane=st.sampled_from([1, 7, 64, 2048]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_context_file_round_trip(height: int, width: int, cell: int, levels: list[int], per_lane: int,
                                 seed: int) -> None:
    from fsqdeploy.entropy import quantize_counts

    rng = np.random.default_rng(seed)
    contexts = [[quantize_counts(rng.integers(0, 50, level) ** 2) for _ in range(level * level)] for level in levels]
    prior = Prior(levels, [quantize_counts([1] * level) for level in levels], contexts, per_lane)
    header = FsqHeader.for_grid(GOLDEN_HASH, height, width, cell, levels).with_prior(prior)
    indices = rng.integers(0, levels, size=(header.num_cells, len(levels)))
    data = write_fsq(header, indices, prior)
    read_header, read_indices = read_fsq(data, prior)
    assert read_header == header and read_header.coding == 2
    np.testing.assert_array_equal(read_indices, indices)


def test_info_prints_the_golden_file_as_fsq_cpp_does(cli, one_line_error, tmp_path):
    """`fsqdeploy info FILE` checks the file whole and prints its header (the text of `fsq-cpp info
    FILE`: tests/cpp/test_cpp_runtime.py compares the two on real files)."""
    (tmp_path / "golden.fsq").write_bytes(bytes.fromhex(GOLDEN_HEX))
    code, out, err = cli("info", tmp_path / "golden.fsq")
    assert code == 0, err
    assert out.splitlines() == [
        f"file       {tmp_path / 'golden.fsq'} ({len(GOLDEN_HEX) // 2} bytes, version 1)",
        "image      5x7 pixels, 4-pixel patches, grid 2x2 (4 patches)",
        "levels     [3, 5, 7] (D=3, 7 bits per patch)",
        f"model      {GOLDEN_HASH.hex()}",
        "payload    4 bytes, CRCs ok",
    ]
    damaged = bytearray.fromhex(GOLDEN_HEX)
    damaged[-6] ^= 1  # a payload bit: the payload CRC no longer matches
    (tmp_path / "damaged.fsq").write_bytes(bytes(damaged))
    code, out, err = cli("info", tmp_path / "golden.fsq", tmp_path / "damaged.fsq")
    one_line_error(code, err, "damaged.fsq': corrupted payload (payload CRC32 mismatch)")
    assert out == ""  # nothing printed for the good file either: every file is read first
