"""The ``.fsq`` file: a small checked header, then every cell's FSQ indices packed bit-tight.

A cell is what one index vector describes: a ``cell_size`` x ``cell_size`` patch encoded on its own
(layout 0, the paper model), or one position of a single latent grid over the whole image (layout
1, the conv codec; ``cell_size`` is its downsampling factor f). Version 2 files say which; version 1
files (patches only) stay readable in Python and C++, and ``FsqHeader.for_image`` still writes them.

Packing is mixed radix. Cell i's D indices become one integer

    V = idx_0 + idx_1*L_0 + idx_2*L_0*L_1 + ...   (idx_0 is the least significant digit)

with ``0 <= V < prod(levels)``, written as a ``bits_per_patch``-bit little-endian field at bits
``[i*b, (i+1)*b)`` of one stream whose bit k is bit ``k % 8`` of byte ``k // 8`` (LSB first).
The last byte is zero-padded. docs/bitstream.md specifies the file byte by byte; a C++ reader
must match it exactly, and the golden tests in tests/runtime/test_bitstream.py pin it.

Version 2's ``coding`` byte says how the payload holds the indices: 0, the packing above; 1, static
interleaved rANS over the artifact's frozen prior (fsqdeploy/entropy.py), whose table hash the header's
``prior_hash`` carries; 2, the same coder with each index's table chosen by the indices above and to
the left of it in its channel (the prior's context tables). An entropy-coded file is written and read
only with that prior (``prior=``), and a reader given another prior refuses it.

Every refusal is an FSQDeployError ("bitstream: ..."). Header and payload carry their own CRC32
and the reader checks every length, so a truncated file or any single flipped bit is refused,
never decoded.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np

from fsqdeploy import entropy
from fsqdeploy.entropy import Prior
from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_bytes_atomic
from fsqdeploy.metrics import fixed_bits

MAGIC = b"FSQB"
VERSION = 2  # what new files are written as (FsqHeader.for_patches / for_grid)
VERSIONS = (1, 2)  # what the reader accepts
LAYOUT_PATCHES = 0  # v2 layout byte: each cell an independent cell_size x cell_size patch
LAYOUT_GRID = 1  # v2 layout byte: the cells are the positions of one latent grid over the image
LAYOUTS = (LAYOUT_PATCHES, LAYOUT_GRID)
CODING_FIXED = 0  # v2 coding byte: fixed-rate mixed-radix packing
CODING_RANS = 1  # v2 coding byte: static interleaved rANS over the artifact's prior (fsqdeploy/entropy.py)
CODING_CONTEXT = 2  # v2 coding byte: the same rANS, each index's table chosen by its above and left neighbours
CODINGS = (CODING_FIXED, CODING_RANS, CODING_CONTEXT)
NO_PRIOR = bytes(32)  # v2 prior_hash of a fixed-rate file
FLAG_GREY = 0x01  # v2 flags bit 0: the source image was grey (R = G = B everywhere); decoders return grey

# v1: magic, version, flags, header_length, model_hash, image_height, image_width, patch_size,
# grid_rows, grid_cols, D. Then D levels (u16 each), then _TAIL, then the header CRC32.
_FIXED = struct.Struct("<4sBBH32sIIHIIH")
_TAIL = struct.Struct("<IQ")  # bits_per_patch, payload_length
# v2: magic, version, flags, header_length, model_hash, image_height, image_width, layout, coding,
# cell_size, grid_rows, grid_cols, D. Then D levels, then _TAIL_V2, then the header CRC32.
_FIXED_V2 = struct.Struct("<4sBBH32sIIBBHIIH")
_TAIL_V2 = struct.Struct("<IQ32s")  # bits_per_cell, payload_length, prior_hash
_CRC = struct.Struct("<I")
_HEADER_EXTRA = _FIXED.size + _TAIL.size + _CRC.size  # v1 header_length = 76 + 2*D
_HEADER_EXTRA_V2 = _FIXED_V2.size + _TAIL_V2.size + _CRC.size  # v2 header_length = 110 + 2*D
_EXTRA = {1: _HEADER_EXTRA, 2: _HEADER_EXTRA_V2}
MAX_LEVEL = 0xFFFF
MAX_D = (0xFFFF - _HEADER_EXTRA_V2) // 2  # so that header_length fits its u16 in either version
_FIELD_LIMITS = {
    "image_height": 0xFFFFFFFF,
    "image_width": 0xFFFFFFFF,
    "cell_size": 0xFFFF,
    "grid_rows": 0xFFFFFFFF,
    "grid_cols": 0xFFFFFFFF,
}
# Field names as each version's spec calls them, so a message names the field the reader sees.
_V1_NAMES = {"cell_size": "patch_size", "bits_per_cell": "bits_per_patch", "cells": "patches"}
_CORRUPT = "Note: the file was damaged after it was written; compress the image again"
_CODINGS_TEXT = ("0, fixed-rate packing, 1, rANS with the artifact's prior, and 2, rANS with its context "
                 "tables")
_OTHER_ART = "Note: decompress with the artifact that compressed it"
_LEVELS_NOTE = "Note: pass the model's levels, e.g. [8, 8, 8]"


def _error(what: str, note: str) -> FSQDeployError:
    """A one-line "bitstream: <what>. <note>"; ``what`` is kept so the file reader can re-word it."""
    err = FSQDeployError(f"bitstream: {what}. {note}")
    err.what = what  # type: ignore[attr-defined]
    return err


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    try:
        values = list(levels)
    except TypeError:
        raise _error(
            f"levels must be a sequence of ints, got {type(levels).__name__}", _LEVELS_NOTE
        ) from None
    if not values:
        raise _error("levels is empty", _LEVELS_NOTE)
    for d, level in enumerate(values):
        if not _is_int(level) or not 2 <= level <= MAX_LEVEL:
            raise _error(f"levels[{d}] = {level!r} is not an int in [2, {MAX_LEVEL}]", _LEVELS_NOTE)
    return tuple(int(level) for level in values)


def _plural(unit: str) -> str:
    return "patches" if unit == "patch" else unit + "s"


def bits_per_patch(levels: Sequence[int]) -> int:
    """ceil(log2(prod(levels))), exact on ints; never 0 since every level is at least 2."""
    return fixed_bits(_check_levels(levels))


def file_length(levels: Sequence[int], num_patches: int, version: int = VERSION) -> int:
    """Bytes of a whole .fsq file of ``num_patches`` cells: header (with its CRC), payload, payload CRC.
    The default is the version ``fsqdeploy compress`` writes (2); ``version=1`` is 34 header bytes less."""
    levels = _check_levels(levels)
    if version not in VERSIONS:
        raise _error(f"version {version!r} is not one of {list(VERSIONS)}", "Note: pass 1 or 2")
    return _EXTRA[version] + 2 * len(levels) + (num_patches * fixed_bits(levels) + 7) // 8 + _CRC.size


def _digit_runs(levels: tuple[int, ...]) -> list[tuple[range, int]]:
    """Split the digits into runs whose radix product fits a uint64, so a run is vectorized numpy."""
    runs: list[tuple[range, int]] = []
    start, product = 0, 1
    for d, level in enumerate(levels):
        if product * level > 1 << 64:
            runs.append((range(start, d), product))
            start, product = d, 1
        product *= level
    runs.append((range(start, len(levels)), product))
    return runs


def _check_indices(indices: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """``indices`` as int64 [N, D] after checking dtype, shape and range."""
    try:
        arr = np.asarray(indices)
    except (TypeError, ValueError):
        arr = np.asarray(None)  # ragged nested lists: reported as a bad dtype below
    if arr.dtype.kind not in "iu":
        raise _error(
            f"indices have dtype {arr.dtype}, expected an integer dtype",
            "Note: pass the codec's integer indices, not codes or latents",
        )
    d = len(levels)
    if arr.ndim != 2 or arr.shape[1] != d:
        raise _error(
            f"indices have shape {list(arr.shape)}, expected [N, {d}] (a row per patch, a column per level)",
            f"Note: reshape them to [-1, {d}]",
        )
    if arr.dtype == np.uint64:  # values above MAX_LEVEL are out of range anyway; cap so the cast can't wrap
        wide = np.minimum(arr, MAX_LEVEL).astype(np.int64)
    else:
        wide = arr.astype(np.int64)
    bad = (wide < 0) | (wide >= np.asarray(levels, dtype=np.int64))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise _error(
            f"indices[{row}, {col}] = {arr[row, col]} is outside [0, {levels[col]}) (levels[{col}])",
            "Note: the indices must come from a model with these levels",
        )
    return wide


def pack_indices(indices: np.ndarray, levels: Sequence[int]) -> bytes:
    """Pack integer indices [N, D] into exactly ceil(N * bits_per_patch / 8) bytes; N may be 0."""
    levels = _check_levels(levels)
    idx = _check_indices(indices, levels)
    n, bits = idx.shape[0], fixed_bits(levels)
    nbytes = (bits + 7) // 8

    # V per patch: Horner inside each uint64-sized run of digits (numpy), across runs on Python ints.
    values = None
    for digits, product in reversed(_digit_runs(levels)):
        run = np.zeros(n, dtype=np.uint64)
        for d in reversed(digits):
            run = run * np.uint64(levels[d]) + idx[:, d].astype(np.uint64)
        values = run.astype(object) if values is None else values * product + run.astype(object)
    whole = b"".join([int(v).to_bytes(nbytes, "little") for v in values])
    if bits % 8 == 0:
        return whole
    # Drop each patch's unused high bits and close the gaps (bit arrays are LSB first per byte).
    stream = np.unpackbits(np.frombuffer(whole, dtype=np.uint8).reshape(n, nbytes), axis=1, bitorder="little")
    return np.packbits(stream[:, :bits].ravel(), bitorder="little").tobytes()


def unpack_indices(data: bytes, levels: Sequence[int], count: int, *, unit: str = "patch") -> np.ndarray:
    """Inverse of pack_indices: int32 [count, D] from exactly ceil(count * bits_per_patch / 8) bytes.

    Refuses nonzero padding bits and fields that decode to prod(levels) or more (corruption);
    ``unit`` names a field in those messages ("patch" as v1 calls it, "cell" as v2 does).
    """
    levels = _check_levels(levels)
    if not _is_int(count) or count < 0:
        raise _error(f"count = {count!r} is not an int >= 0", "Note: pass the number of patches")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(f"data must be bytes, got {type(data).__name__}", "Note: pass the packed payload")
    count, bits = int(count), fixed_bits(levels)
    nbytes = (bits + 7) // 8
    expected = (count * bits + 7) // 8
    if len(data) != expected:
        raise _error(
            f"payload has {len(data)} bytes, expected {expected} for {count} {_plural(unit)} of {bits} bits",
            _CORRUPT,
        )
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if stream[count * bits :].any():
        raise _error(f"padding bits after the last {unit} are not zero", _CORRUPT)

    # Widen each field to whole bytes so int.from_bytes can read it.
    fields = stream[: count * bits].reshape(count, bits)
    fields = np.pad(fields, ((0, 0), (0, nbytes * 8 - bits)))
    whole = np.packbits(fields, axis=1, bitorder="little").tobytes()
    values = np.array(
        [int.from_bytes(whole[i : i + nbytes], "little") for i in range(0, count * nbytes, nbytes)],
        dtype=object,
    )
    size = math.prod(levels)
    over = np.flatnonzero(values >= size)
    if len(over):
        raise _error(
            f"{unit} {int(over[0])} decodes to {values[over[0]]}, outside the codebook [0, {size})", _CORRUPT
        )
    out = np.empty((count, len(levels)), dtype=np.int32)
    for digits, product in _digit_runs(levels):
        run = (values % product).astype(np.uint64)
        values = values // product
        for d in digits:
            level = np.uint64(levels[d])
            out[:, d] = run % level
            run //= level
    return out


def _hash_bytes(model_hash: bytes | str) -> bytes:
    """A raw 32-byte sha256 digest; a 64-character hex string (as manifests store it) is accepted too."""
    digest = model_hash
    if isinstance(digest, str):
        try:
            digest = bytes.fromhex(digest)
        except ValueError:
            pass
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 32:
        raise _error(
            f"model hash must be a sha256 digest (32 raw bytes or 64 hex characters), got {model_hash!r:.80}",
            "Note: use the hash from the model's manifest",
        )
    return bytes(digest)


def _levels_text(levels: Sequence[int]) -> str:
    if len(levels) <= 8:
        return str(list(levels))
    return f"[{', '.join(map(str, levels[:4]))}, ...] (D={len(levels)})"


@dataclass(frozen=True)
class FsqHeader:
    """Everything besides the payload. Fields are checked (and normalized) on construction.

    Build one with ``for_patches`` (v2, layout 0: the paper model), ``for_grid`` (v2, layout 1: the
    conv codec's latent grid) or ``for_image`` (v1, as written before version 2). Positional
    construction keeps the v1 order and default (version 1, patches)."""

    model_hash: bytes  # raw sha256 digest of the model (the manifest's hash); hex is converted
    image_height: int  # original image size in pixels, before padding to whole cells
    image_width: int
    cell_size: int  # pixels per cell side: the patch size (layout 0) or the downsampling factor f (layout 1)
    grid_rows: int  # ceil(image_height / cell_size)
    grid_cols: int  # ceil(image_width / cell_size)
    levels: tuple[int, ...]
    version: int = 1
    layout: int = LAYOUT_PATCHES  # v1 files hold patches only
    coding: int = CODING_FIXED
    prior_hash: bytes = NO_PRIOR  # coding 1: the raw sha256 of the prior's tables (Prior.sha256)
    grey: bool = False  # v2 flags bit 0: the image was grey, so it decodes grey (docs/bitstream.md)

    def __post_init__(self) -> None:
        if self.version not in VERSIONS or isinstance(self.version, bool):
            raise _error(f"version = {self.version!r} is not one of {list(VERSIONS)}",
                         "Note: read the file with the fsqdeploy version that wrote it")
        v1 = self.version == 1
        object.__setattr__(self, "version", int(self.version))
        if self.layout not in LAYOUTS or isinstance(self.layout, bool) or (v1 and self.layout != LAYOUT_PATCHES):
            known = "0 (patches)" if v1 else "0 (patches) or 1 (latent grid)"
            raise _error(f"unsupported layout {self.layout!r} (version {self.version} knows {known})",
                         "Note: the file comes from a newer writer; read it with that fsqdeploy version")
        if self.coding not in CODINGS or isinstance(self.coding, bool) or (v1 and self.coding != CODING_FIXED):
            known = "0, fixed-rate packing" if v1 else _CODINGS_TEXT
            raise _error(f"unsupported coding {self.coding!r} (version {self.version} knows {known})",
                         "Note: entropy-coded files need a newer fsqdeploy")
        prior = self.prior_hash
        if not isinstance(prior, (bytes, bytearray)) or len(prior) != 32:
            raise _error(f"prior_hash must be 32 raw bytes, got {prior!r:.80}", "Note: use Prior.sha256")
        object.__setattr__(self, "prior_hash", bytes(prior))
        if (self.prior_hash == NO_PRIOR) != (self.coding == CODING_FIXED):
            raise _error(_prior_hash_problem(self.coding), "Note: build the header with FsqHeader.with_prior")
        if not isinstance(self.grey, (bool, np.bool_)) or (v1 and self.grey):
            raise _error(f"grey = {self.grey!r} is not a bool" if not v1 else "version 1 has no grey flag",
                         "Note: build the header with FsqHeader.for_patches or FsqHeader.for_grid")
        object.__setattr__(self, "grey", bool(self.grey))
        object.__setattr__(self, "layout", int(self.layout))
        object.__setattr__(self, "coding", int(self.coding))
        object.__setattr__(self, "model_hash", _hash_bytes(self.model_hash))
        object.__setattr__(self, "levels", _check_levels(self.levels))
        max_d = _max_d(self.version)
        if len(self.levels) > max_d:
            raise _error(
                f"{len(self.levels)} levels do not fit the header (at most {max_d})",
                "Note: use a model with fewer FSQ dimensions",
            )
        for name, limit in _FIELD_LIMITS.items():
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= limit:
                raise _error(
                    f"{self._name(name)} = {value!r} is not an int in [1, {limit}]",
                    # v1 keeps its words (as the C++ reader does)
                    "Note: images, patches and grids must be non-empty" if self.version == 1
                    else "Note: images, cells and grids must be non-empty",
                )
            object.__setattr__(self, name, int(value))
        rows, cols = -(-self.image_height // self.cell_size), -(-self.image_width // self.cell_size)
        if (self.grid_rows, self.grid_cols) != (rows, cols):
            what = "patches" if self.layout == LAYOUT_PATCHES else "latent cells"
            raise _error(
                f"grid {self.grid_rows}x{self.grid_cols} does not tile a {self.image_height}x"
                f"{self.image_width} image with {self.cell_size}-pixel {what} (expected {rows}x{cols})",
                "Note: build the header with FsqHeader.for_patches or FsqHeader.for_grid",
            )

    @classmethod
    def _sized(cls, model_hash: bytes | str, image_height: int, image_width: int, cell_size: int,
               levels: Sequence[int], version: int, layout: int) -> FsqHeader:
        rows = cols = 0  # reported by __post_init__ unless the sizes are ints
        if all(_is_int(v) for v in (image_height, image_width, cell_size)) and cell_size >= 1:
            rows, cols = -(-image_height // cell_size), -(-image_width // cell_size)
        return cls(model_hash, image_height, image_width, cell_size, rows, cols, levels, version, layout)

    @classmethod
    def for_patches(cls, model_hash: bytes | str, image_height: int, image_width: int, patch_size: int,
                    levels: Sequence[int]) -> FsqHeader:
        """A v2 header (layout 0) for an image tiled row-major into patch_size squares, each
        encoded on its own (the paper model), the edges padded."""
        return cls._sized(model_hash, image_height, image_width, patch_size, levels, 2, LAYOUT_PATCHES)

    @classmethod
    def for_grid(cls, model_hash: bytes | str, image_height: int, image_width: int, downsample: int,
                 levels: Sequence[int]) -> FsqHeader:
        """A v2 header (layout 1) for the latent grid of an image edge-padded on the bottom and right
        to multiples of ``downsample`` (f) and encoded in one piece: one cell per latent position."""
        return cls._sized(model_hash, image_height, image_width, downsample, levels, 2, LAYOUT_GRID)

    @classmethod
    def for_image(cls, model_hash: bytes | str, image_height: int, image_width: int, patch_size: int,
                  levels: Sequence[int]) -> FsqHeader:
        """A version 1 header for an image tiled row-major into patch_size squares, the edges padded
        (the format before version 2; readers of both versions read it)."""
        return cls._sized(model_hash, image_height, image_width, patch_size, levels, 1, LAYOUT_PATCHES)

    def with_prior(self, prior: Prior, coding: int | None = None) -> FsqHeader:
        """This (version 2) header for an entropy-coded payload over ``prior``'s tables: ``coding``,
        by default the prior's own (2 when it has context tables, else 1)."""
        coding = prior.coding if coding is None else coding
        if coding not in (CODING_RANS, CODING_CONTEXT):
            raise _error(f"with_prior needs coding 1 or 2, got {coding!r}", "Note: coding 0 has no prior")
        return replace(self, coding=coding, prior_hash=prior.sha256)

    @property
    def patch_size(self) -> int:
        """v1's name of ``cell_size``."""
        return self.cell_size

    @property
    def spatial(self) -> bool:
        """True when the cells are one latent grid (layout 1), not independent patches."""
        return self.layout == LAYOUT_GRID

    @property
    def num_cells(self) -> int:
        return self.grid_rows * self.grid_cols

    @property
    def num_patches(self) -> int:
        """v1's name of ``num_cells``."""
        return self.num_cells

    @property
    def header_length(self) -> int:
        return _EXTRA[self.version] + 2 * len(self.levels)

    def _name(self, field: str) -> str:
        return _V1_NAMES.get(field, field) if self.version == 1 else field


def _prior_hash_problem(coding: int) -> str:
    if coding == CODING_FIXED:
        return "prior_hash is not zero in a fixed-rate (coding 0) file"
    return f"prior_hash is zero in an entropy-coded (coding {coding}) file"


def _max_d(version: int) -> int:
    return (0xFFFF - _EXTRA[version]) // 2  # so that header_length fits its u16


def cells_to_grid(header: FsqHeader, cells: np.ndarray) -> np.ndarray:
    """A layout-1 file's indices [grid_rows * grid_cols, D] (row-major cells) -> the channels-first
    grid [1, D, grid_rows, grid_cols] the decoder reads."""
    cells = np.asarray(cells)
    return np.ascontiguousarray(cells.reshape(1, header.grid_rows, header.grid_cols, -1).transpose(0, 3, 1, 2))


def grid_to_cells(grid: np.ndarray) -> np.ndarray:
    """A channels-first grid [1, D, rows, cols] -> [rows * cols, D], cell (r, c) at row r * cols + c."""
    grid = np.asarray(grid)
    if grid.ndim != 4 or grid.shape[0] != 1:
        raise _error(f"a latent grid must have shape [1, D, rows, cols], got {list(grid.shape)}",
                     "Note: pass one image's indices")
    return np.ascontiguousarray(grid[0].transpose(1, 2, 0).reshape(-1, grid.shape[1]))


def write_fsq(header: FsqHeader, indices: np.ndarray, prior: Prior | None = None) -> bytes:
    """The whole .fsq file for ``indices`` [grid_rows * grid_cols, D], cells in row-major order
    (``grid_to_cells`` turns a latent grid into that). A coding-1 header needs its ``prior``."""
    if not isinstance(header, FsqHeader):
        raise _error(
            f"header must be an FsqHeader, got {type(header).__name__}",
            "Note: build it with FsqHeader.for_patches or FsqHeader.for_grid",
        )
    rows = np.shape(indices)[0] if np.ndim(indices) else 0
    if header.coding == CODING_FIXED:
        payload = pack_indices(indices, header.levels)
    else:
        _check_prior(header, prior, "")
        checked = _check_indices(indices, header.levels)
        if header.coding == CODING_RANS:
            payload = entropy.encode(checked, prior)  # type: ignore[arg-type]
        else:  # coding 2 needs the grid's shape: a wrong row count is refused below instead
            payload = b"" if rows != header.num_cells else entropy.encode_context(
                checked, header.grid_rows, header.grid_cols, prior)  # type: ignore[arg-type]
    if rows != header.num_cells:
        unit = "tile of the padded image" if header.layout == LAYOUT_PATCHES else "position of the latent grid"
        raise _error(
            f"indices have {rows} rows but the {header.grid_rows}x{header.grid_cols} grid needs "
            f"{header.num_cells}",
            f"Note: encode every {unit}, row by row",
        )
    d = len(header.levels)
    levels = struct.pack(f"<{d}H", *header.levels)
    grid = (header.grid_rows, header.grid_cols, d)
    if header.version == 1:
        head = _FIXED.pack(MAGIC, 1, 0, header.header_length, header.model_hash, header.image_height,
                           header.image_width, header.cell_size, *grid)
        head += levels + _TAIL.pack(fixed_bits(header.levels), len(payload))
    else:
        flags = FLAG_GREY if header.grey else 0
        head = _FIXED_V2.pack(MAGIC, 2, flags, header.header_length, header.model_hash, header.image_height,
                              header.image_width, header.layout, header.coding, header.cell_size, *grid)
        head += levels + _TAIL_V2.pack(fixed_bits(header.levels), len(payload), header.prior_hash)
    return b"".join([head, _CRC.pack(zlib.crc32(head)), payload, _CRC.pack(zlib.crc32(payload))])


def read_fsq(data: bytes, prior: Prior | None = None) -> tuple[FsqHeader, np.ndarray]:
    """Parse and check a whole .fsq file (version 1 or 2): the header and int32 indices
    [grid_rows * grid_cols, D], cells in row-major order (``cells_to_grid`` for a latent grid).
    An entropy-coded file (coding 1) needs ``prior``, the artifact's, and is refused with another."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(f"data must be bytes, got {type(data).__name__}", "Note: pass the file's contents")
    return _read(bytes(data), "", prior)


def _check_prior(header: FsqHeader, prior: Prior | None, source: str) -> None:
    """An entropy-coded file is coded with exactly one prior: refuse none, or another (a foreign prior)."""
    if prior is None:
        raise FSQDeployError(f"bitstream: {source}file is entropy-coded (coding {header.coding}, prior "
                             f"{header.prior_hash.hex()[:8]}..) and no prior was given. {_OTHER_ART}")
    if not isinstance(prior, Prior):
        raise FSQDeployError(f"bitstream: prior must be a Prior, got {type(prior).__name__}. "
                             "Note: pass the artifact's prior")
    if prior.sha256 != header.prior_hash:
        raise FSQDeployError(f"bitstream: {source}file was coded with a foreign prior (prior_hash "
                             f"{header.prior_hash.hex()[:8]}.. != this artifact's {prior.sha256.hex()[:8]}..). "
                             f"{_OTHER_ART}")
    if prior.levels != header.levels:  # the hash covers the prior's levels, not the file's
        raise FSQDeployError(f"bitstream: {source}file has levels {_levels_text(header.levels)} but its prior "
                             f"has {_levels_text(prior.levels)}. {_OTHER_ART}")


def _read(data: bytes, source: str, prior: Prior | None = None) -> tuple[FsqHeader, np.ndarray]:
    # Order matters: lengths and the header CRC before anything that trusts a header field, so a
    # flipped bit in D, header_length or payload_length cannot move where the CRCs are looked for.
    def fail(what: str, note: str = _CORRUPT) -> FSQDeployError:
        return FSQDeployError(f"bitstream: {source}{what}. {note}")

    size = len(data)
    if data[:4] != MAGIC[:size]:
        raise fail(
            f"not an .fsq file (it starts with {data[:4]!r}, not {MAGIC!r})",
            "Note: pass a file written by `fsqdeploy compress`",
        )
    if size <= 4:
        raise fail(f"file is truncated or too short: {size} bytes, the fixed header alone has {_FIXED.size}")
    version = data[4]
    if version not in VERSIONS:
        raise fail(
            f"unsupported format version {version} (this reader knows {', '.join(map(str, VERSIONS))})",
            "Note: read the file with the fsqdeploy version that wrote it",
        )
    fixed, tail = (_FIXED, _TAIL) if version == 1 else (_FIXED_V2, _TAIL_V2)
    if size < fixed.size:
        raise fail(f"file is truncated or too short: {size} bytes, the fixed header alone has {fixed.size}")
    if version == 1:
        _, _, flags, header_length, model_hash, height, width, cell_size, rows, cols, d = fixed.unpack_from(data)
        layout, coding = LAYOUT_PATCHES, CODING_FIXED
    else:
        (_, _, flags, header_length, model_hash, height, width, layout, coding, cell_size, rows, cols,
         d) = fixed.unpack_from(data)
    if flags & ~(FLAG_GREY if version == 2 else 0):
        expected = "0 (reserved)" if version == 1 else "0 or 0x01 (bit 0: grey; the others reserved)"
        raise fail(
            f"flags byte is {flags:#04x}, expected {expected}",
            "Note: the file comes from a newer writer or is damaged",
        )
    extra = _EXTRA[version]
    if d == 0 or header_length != extra + 2 * d:
        raise fail(
            f"header_length {header_length} does not match D = {d} levels (expected {extra} + 2*D)"
        )
    if size < header_length:
        raise fail(f"file is truncated: {size} bytes, shorter than its {header_length}-byte header")
    crc_at = header_length - _CRC.size
    if zlib.crc32(data[:crc_at]) != _CRC.unpack_from(data, crc_at)[0]:
        raise fail("corrupted header (header CRC32 mismatch)")

    # The header is intact; what follows catches files that were written wrong (or by a newer
    # writer), not damaged. Layout and coding first: a coding this reader does not know has a
    # payload whose length and packing it cannot judge.
    levels = struct.unpack_from(f"<{d}H", data, fixed.size)
    bits, payload_length, *prior_field = tail.unpack_from(data, fixed.size + 2 * d)
    names = _V1_NAMES if version == 1 else {}
    if layout not in LAYOUTS:
        raise fail(f"unsupported layout {layout} (this reader knows 0, patches, and 1, a latent grid)",
                   "Note: read the file with the fsqdeploy version that wrote it")
    if coding not in CODINGS:
        raise fail(f"unsupported coding {coding} (this reader knows {_CODINGS_TEXT})",
                   "Note: entropy-coded files need a newer fsqdeploy")
    prior_hash = prior_field[0] if prior_field else NO_PRIOR
    if (prior_hash == NO_PRIOR) != (coding == CODING_FIXED):
        raise fail(_prior_hash_problem(coding))
    try:
        header = FsqHeader(model_hash, height, width, cell_size, rows, cols, levels, version, layout, coding,
                           prior_hash, bool(flags & FLAG_GREY))
    except FSQDeployError as err:
        raise fail(f"invalid header: {err.what}") from None  # type: ignore[attr-defined]
    bits_name, cells = names.get("bits_per_cell", "bits_per_cell"), names.get("cells", "cells")
    if bits != fixed_bits(header.levels):
        raise fail(f"{bits_name} is {bits} but levels {_levels_text(levels)} need {fixed_bits(header.levels)}")
    expected = (header.num_cells * bits + 7) // 8
    if coding == CODING_FIXED and payload_length != expected:
        raise fail(
            f"payload_length is {payload_length}, expected {expected} for {header.num_cells} "
            f"{cells} of {bits} bits"
        )
    end = header_length + payload_length
    if size < end + _CRC.size:
        raise fail(f"file is truncated: {size} bytes, expected {end + _CRC.size}")
    if size > end + _CRC.size:
        raise fail(
            f"{size - end - _CRC.size} trailing bytes after the payload CRC",
            "Note: the file was appended to, or several files were joined",
        )
    payload = data[header_length:end]
    if zlib.crc32(payload) != _CRC.unpack_from(data, end)[0]:
        raise fail("corrupted payload (payload CRC32 mismatch)")
    try:
        if coding == CODING_RANS:
            _check_prior(header, prior, source)
            indices = entropy.decode(payload, prior, header.num_cells)  # type: ignore[arg-type]
        elif coding == CODING_CONTEXT:
            _check_prior(header, prior, source)
            indices = entropy.decode_context(payload, prior, rows, cols)  # type: ignore[arg-type]
        else:
            indices = unpack_indices(payload, levels, header.num_cells, unit="patch" if version == 1 else "cell")
    except FSQDeployError as err:
        if not hasattr(err, "what"):  # the prior's own refusals are whole lines already
            raise
        raise fail(err.what) from None  # type: ignore[attr-defined]
    return header, indices


def check_model(header: FsqHeader, model_hash: bytes | str, levels: Sequence[int]) -> None:
    """Refuse to decode a file with a model other than the one that wrote it."""
    model_hash, levels = _hash_bytes(model_hash), _check_levels(levels)
    if header.model_hash != model_hash:
        raise _error(
            f"file was made by another model (hash {header.model_hash.hex()[:8]}.. != "
            f"{model_hash.hex()[:8]}..)",
            "Note: decompress with the model that compressed it",
        )
    if header.levels != levels:
        raise _error(
            f"file was made with levels {_levels_text(header.levels)} but the model has "
            f"{_levels_text(levels)}",
            "Note: decompress with the model that compressed it",
        )


def save_fsq(path: str | os.PathLike[str], header: FsqHeader, indices: np.ndarray,
             prior: Prior | None = None) -> None:
    """Encode first, then write a temp file beside ``path`` and os.replace it: all or nothing."""
    save_fsq_bytes(path, write_fsq(header, indices, prior))


def save_fsq_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """A whole .fsq file's bytes (``write_fsq``'s) to ``path``, atomically, one line if it cannot."""
    try:
        write_bytes_atomic(path, data)
    except OSError as err:
        raise _error(
            f"cannot write '{os.fspath(path)}': {err.strerror or err}",
            "Note: check that the folder is writable and the disk is not full",
        ) from None


_CODING_NAMES = {CODING_FIXED: "fixed-rate", CODING_RANS: "rANS", CODING_CONTEXT: "rANS, context tables"}


def describe_fsq(path: str | os.PathLike[str], header: FsqHeader, file_size: int) -> str:
    """What ``fsqdeploy info FILE`` prints of a file that read whole, line for line the text of
    ``fsq-cpp info FILE`` (examples/cpp/fsq_cpp.cpp)."""
    levels = header.levels
    shown = ", ".join(map(str, levels[:16])) + (", ..." if len(levels) > 16 else "")
    spatial = header.spatial
    cell = "cell" if spatial else "patch"
    lines = [
        f"file       {os.fspath(path)} ({file_size} bytes, version {header.version})",
        f"image      {header.image_height}x{header.image_width}{' grey' if header.grey else ''} pixels, "
        f"{header.cell_size}-pixel {'latent cells' if spatial else 'patches'}, grid {header.grid_rows}x"
        f"{header.grid_cols} ({header.num_cells} {'cells' if spatial else 'patches'})",
        f"levels     [{shown}] (D={len(levels)}, {fixed_bits(levels)} bits per {cell})",
        f"model      {header.model_hash.hex()}",
    ]
    if header.version == 2:
        prior = f", prior {header.prior_hash.hex()[:8]}.." if header.coding != CODING_FIXED else ""
        lines.append(f"coding     {header.coding} ({_CODING_NAMES[header.coding]}){prior}")
    lines.append(f"payload    {file_size - header.header_length - _CRC.size} bytes, CRCs ok")
    return "\n".join(lines)


def load_fsq(path: str | os.PathLike[str], prior: Prior | None = None) -> tuple[FsqHeader, np.ndarray]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise _error(
            f"cannot read '{os.fspath(path)}': {err.strerror or err}",
            "Note: pass an .fsq file written by `fsqdeploy compress`",
        ) from None
    return _read(data, f"'{os.fspath(path)}': ", prior)
