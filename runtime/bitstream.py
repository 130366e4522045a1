"""The ``.fsq`` file: a small checked header, then every patch's FSQ indices packed bit-tight.

Packing is mixed radix. Patch i's D indices become one integer

    V = idx_0 + idx_1*L_0 + idx_2*L_0*L_1 + ...   (idx_0 is the least significant digit)

with ``0 <= V < prod(levels)``, written as a ``bits_per_patch``-bit little-endian field at bits
``[i*b, (i+1)*b)`` of one stream whose bit k is bit ``k % 8`` of byte ``k // 8`` (LSB first).
The last byte is zero-padded. docs/bitstream.md specifies the file byte by byte; a C++ reader
must match it exactly, and the golden test in tests/runtime/test_bitstream.py pins it.

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
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_bytes_atomic
from fsqdeploy.metrics import fixed_bits

MAGIC = b"FSQB"
VERSION = 1

# magic, version, flags, header_length, model_hash, image_height, image_width, patch_size,
# grid_rows, grid_cols, D. Then D levels (u16 each), then _TAIL, then the header CRC32.
_FIXED = struct.Struct("<4sBBH32sIIHIIH")
_TAIL = struct.Struct("<IQ")  # bits_per_patch, payload_length
_CRC = struct.Struct("<I")
_HEADER_EXTRA = _FIXED.size + _TAIL.size + _CRC.size  # header_length = 76 + 2*D
MAX_LEVEL = 0xFFFF
MAX_D = (0xFFFF - _HEADER_EXTRA) // 2  # so that header_length fits its u16
_FIELD_LIMITS = {
    "image_height": 0xFFFFFFFF,
    "image_width": 0xFFFFFFFF,
    "patch_size": 0xFFFF,
    "grid_rows": 0xFFFFFFFF,
    "grid_cols": 0xFFFFFFFF,
}
_CORRUPT = "Note: the file was damaged after it was written; compress the image again"
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


def bits_per_patch(levels: Sequence[int]) -> int:
    """ceil(log2(prod(levels))), exact on ints; never 0 since every level is at least 2."""
    return fixed_bits(_check_levels(levels))


def file_length(levels: Sequence[int], num_patches: int) -> int:
    """Bytes of a whole .fsq file of ``num_patches`` patches: header (with its CRC), payload, payload CRC."""
    levels = _check_levels(levels)
    return _HEADER_EXTRA + 2 * len(levels) + (num_patches * fixed_bits(levels) + 7) // 8 + _CRC.size


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


def unpack_indices(data: bytes, levels: Sequence[int], count: int) -> np.ndarray:
    """Inverse of pack_indices: int32 [count, D] from exactly ceil(count * bits_per_patch / 8) bytes.

    Refuses nonzero padding bits and fields that decode to prod(levels) or more (corruption).
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
            f"payload has {len(data)} bytes, expected {expected} for {count} patches of {bits} bits", _CORRUPT
        )
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if stream[count * bits :].any():
        raise _error("padding bits after the last patch are not zero", _CORRUPT)

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
            f"patch {int(over[0])} decodes to {values[over[0]]}, outside the codebook [0, {size})", _CORRUPT
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
    """Everything besides the payload. Fields are checked (and normalized) on construction."""

    model_hash: bytes  # raw sha256 digest of the model (the manifest's hash); hex is converted
    image_height: int  # original image size in pixels, before padding to whole patches
    image_width: int
    patch_size: int  # the model's image size, e.g. 32
    grid_rows: int  # ceil(image_height / patch_size)
    grid_cols: int  # ceil(image_width / patch_size)
    levels: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_hash", _hash_bytes(self.model_hash))
        object.__setattr__(self, "levels", _check_levels(self.levels))
        if len(self.levels) > MAX_D:
            raise _error(
                f"{len(self.levels)} levels do not fit the header (at most {MAX_D})",
                "Note: use a model with fewer FSQ dimensions",
            )
        for name, limit in _FIELD_LIMITS.items():
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= limit:
                raise _error(
                    f"{name} = {value!r} is not an int in [1, {limit}]",
                    "Note: images, patches and grids must be non-empty",
                )
            object.__setattr__(self, name, int(value))
        rows, cols = -(-self.image_height // self.patch_size), -(-self.image_width // self.patch_size)
        if (self.grid_rows, self.grid_cols) != (rows, cols):
            raise _error(
                f"grid {self.grid_rows}x{self.grid_cols} does not tile a {self.image_height}x"
                f"{self.image_width} image with {self.patch_size}-pixel patches (expected {rows}x{cols})",
                "Note: build the header with FsqHeader.for_image",
            )

    @classmethod
    def for_image(
        cls,
        model_hash: bytes | str,
        image_height: int,
        image_width: int,
        patch_size: int,
        levels: Sequence[int],
    ) -> FsqHeader:
        """The header for an image tiled row-major into patch_size squares, the edges padded."""
        rows = cols = 0  # reported by __post_init__ unless the sizes are ints
        if all(_is_int(v) for v in (image_height, image_width, patch_size)) and patch_size >= 1:
            rows, cols = -(-image_height // patch_size), -(-image_width // patch_size)
        return cls(model_hash, image_height, image_width, patch_size, rows, cols, levels)

    @property
    def num_patches(self) -> int:
        return self.grid_rows * self.grid_cols

    @property
    def header_length(self) -> int:
        return _HEADER_EXTRA + 2 * len(self.levels)


def write_fsq(header: FsqHeader, indices: np.ndarray) -> bytes:
    """The whole .fsq file for ``indices`` [grid_rows * grid_cols, D], tiles in row-major order."""
    if not isinstance(header, FsqHeader):
        raise _error(
            f"header must be an FsqHeader, got {type(header).__name__}",
            "Note: build it with FsqHeader.for_image",
        )
    payload = pack_indices(indices, header.levels)
    rows = np.shape(indices)[0]
    if rows != header.num_patches:
        raise _error(
            f"indices have {rows} rows but the {header.grid_rows}x{header.grid_cols} grid needs "
            f"{header.num_patches}",
            "Note: encode every tile of the padded image, row by row",
        )
    d = len(header.levels)
    sizes = (header.image_height, header.image_width, header.patch_size, header.grid_rows, header.grid_cols)
    head = _FIXED.pack(MAGIC, VERSION, 0, header.header_length, header.model_hash, *sizes, d)
    head += struct.pack(f"<{d}H", *header.levels) + _TAIL.pack(fixed_bits(header.levels), len(payload))
    return b"".join([head, _CRC.pack(zlib.crc32(head)), payload, _CRC.pack(zlib.crc32(payload))])


def read_fsq(data: bytes) -> tuple[FsqHeader, np.ndarray]:
    """Parse and check a whole .fsq file: the header and int32 indices [grid_rows * grid_cols, D]."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(f"data must be bytes, got {type(data).__name__}", "Note: pass the file's contents")
    return _read(bytes(data), "")


def _read(data: bytes, source: str) -> tuple[FsqHeader, np.ndarray]:
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
    if size < _FIXED.size:
        raise fail(f"file is truncated or too short: {size} bytes, the fixed header alone has {_FIXED.size}")
    _, version, flags, header_length, model_hash, *sizes, d = _FIXED.unpack_from(data)
    if version != VERSION:
        raise fail(
            f"unsupported format version {version} (this reader knows {VERSION})",
            "Note: read the file with the fsqdeploy version that wrote it",
        )
    if flags != 0:
        raise fail(
            f"flags byte is {flags:#04x}, expected 0 (reserved)",
            "Note: the file comes from a newer writer or is damaged",
        )
    if d == 0 or header_length != _HEADER_EXTRA + 2 * d:
        raise fail(
            f"header_length {header_length} does not match D = {d} levels (expected {_HEADER_EXTRA} + 2*D)"
        )
    if size < header_length:
        raise fail(f"file is truncated: {size} bytes, shorter than its {header_length}-byte header")
    crc_at = header_length - _CRC.size
    if zlib.crc32(data[:crc_at]) != _CRC.unpack_from(data, crc_at)[0]:
        raise fail("corrupted header (header CRC32 mismatch)")

    # The header is intact; what follows catches files that were written wrong, not damaged.
    levels = struct.unpack_from(f"<{d}H", data, _FIXED.size)
    bits, payload_length = _TAIL.unpack_from(data, _FIXED.size + 2 * d)
    try:
        header = FsqHeader(model_hash, *sizes, levels)
    except FSQDeployError as err:
        raise fail(f"invalid header: {err.what}") from None  # type: ignore[attr-defined]
    if bits != fixed_bits(header.levels):
        raise fail(f"bits_per_patch is {bits} but levels {_levels_text(levels)} need {fixed_bits(header.levels)}")
    expected = (header.num_patches * bits + 7) // 8
    if payload_length != expected:
        raise fail(
            f"payload_length is {payload_length}, expected {expected} for {header.num_patches} "
            f"patches of {bits} bits"
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
        indices = unpack_indices(payload, levels, header.num_patches)
    except FSQDeployError as err:
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


def save_fsq(path: str | os.PathLike[str], header: FsqHeader, indices: np.ndarray) -> None:
    """Encode first, then write a temp file beside ``path`` and os.replace it: all or nothing."""
    data = write_fsq(header, indices)
    try:
        write_bytes_atomic(path, data)
    except OSError as err:
        raise _error(
            f"cannot write '{os.fspath(path)}': {err.strerror or err}",
            "Note: check that the folder is writable and the disk is not full",
        ) from None


def load_fsq(path: str | os.PathLike[str]) -> tuple[FsqHeader, np.ndarray]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise _error(
            f"cannot read '{os.fspath(path)}': {err.strerror or err}",
            "Note: pass an .fsq file written by `fsqdeploy compress`",
        ) from None
    return _read(data, f"'{os.fspath(path)}': ")
