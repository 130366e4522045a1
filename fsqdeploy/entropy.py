"""Static interleaved rANS over FSQ indices (the .fsq payload of coding 1), and its frozen prior.

A ``Prior`` is one integer frequency table per index column d: ``L_d`` frequencies, each >= 1,
summing to exactly 2^16. It is frozen at export (export/prior.py), stored in ART/prior.json and
named by the sha256 of a canonical byte form that every .fsq file of coding 1 carries, so a file
decodes only with the tables it was coded with. No float touches the coder: the same integers give
the same bytes on any machine, in Python and in C++ (runtime/cpp/src/entropy.cpp).

The coder: symbol i of the flat sequence (cells row-major, within a cell d = 0..D-1) uses table
``i % D`` and lane ``i % K``; each of the K lanes is a 32-bit rANS state in [2^24, 2^32) that
moves bytes, at most two per symbol. Why bytes and 2^24, not 16-bit words over [2^16, 2^32): with
the state's lower bound equal to the tables' 2^16 the coder itself lost 0.46% (rocket) and 0.69%
(chelsea) against the cross-entropy, measured with one lane; 256 times that bound loses nothing
measurable. ``K = lane_count(n)`` grows with the number of symbols because every lane costs about
3.5 bytes (its 32-bit final state, whose first 24 bits carry no data): few lanes on small images
keep the size within 1% of the tables' cross-entropy, more on large ones let numpy work across
lanes. docs/bitstream.md specifies every byte.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import read_format_json, write_json_atomic

PRECISION = 16  # frequencies of a table sum to 2^PRECISION
TOTAL = 1 << PRECISION
STATE_LOW = 1 << 24  # a lane's state lives in [STATE_LOW, 2^32); bytes move in and out
MAX_LANES = 32
SYMBOLS_PER_LANE = 2048  # lane_count: one more lane per this many symbols, up to MAX_LANES
PRIOR_MAGIC = b"FSQP"  # first bytes of the canonical form the prior's sha256 is taken over
PRIOR_FILE = "prior.json"  # in ART, listed in the manifest's files and named by its "prior" record
PRIOR_FORMAT, PRIOR_VERSION = "fsqdeploy-prior", 1
_CORRUPT = "Note: the file was damaged after it was written; compress the image again"
_PRIOR_NOTE = "Note: export the artifact again"


def _error(what: str, note: str = _CORRUPT) -> FSQDeployError:
    """A one-line "bitstream: <what>. <note>"; ``what`` is kept so the file reader can re-word it."""
    err = FSQDeployError(f"bitstream: {what}. {note}")
    err.what = what  # type: ignore[attr-defined]
    return err


def lane_count(symbols: int) -> int:
    """K for a payload of ``symbols`` symbols (cells * D): floor(symbols / 2048), clamped to [1, 32]."""
    return max(1, min(MAX_LANES, symbols // SYMBOLS_PER_LANE))


@dataclass(frozen=True)
class Prior:
    """Frozen per-column frequency tables. Checked on construction: one table per level, ``L_d``
    entries each, every entry >= 1, each table summing to 2^16."""

    levels: tuple[int, ...]
    frequencies: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        levels = tuple(int(v) for v in self.levels)
        tables = tuple(tuple(int(f) for f in table) for table in self.frequencies)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "frequencies", tables)
        check_tables(levels, tables)

    @functools.cached_property
    def sha256(self) -> bytes:
        """The raw digest of ``canonical_bytes``: what a coding-1 file's prior_hash holds."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    def canonical_bytes(self) -> bytes:
        """``FSQP``, precision u8, D u16, then per column d: L_d u16 and its L_d frequencies u16,
        little-endian (docs/bitstream.md)."""
        parts = [PRIOR_MAGIC, struct.pack("<BH", PRECISION, len(self.levels))]
        for level, table in zip(self.levels, self.frequencies):
            parts.append(struct.pack(f"<H{level}H", level, *table))
        return b"".join(parts)

    def to_json(self, source: dict[str, Any]) -> dict[str, Any]:
        """ART/prior.json: the tables, their hash and where they came from (``source``)."""
        return {"format": PRIOR_FORMAT, "format_version": PRIOR_VERSION, "coding": 1, "precision": PRECISION,
                "levels": list(self.levels), "frequencies": [list(t) for t in self.frequencies],
                "sha256": self.sha256.hex(), "source": source}

    def save(self, path: str | Path, source: dict[str, Any]) -> None:
        write_json_atomic(path, self.to_json(source))

    @classmethod
    def load(cls, path: str | Path) -> Prior:
        """Read ART/prior.json; the tables are checked and must hash to the recorded sha256."""
        path = Path(path)
        d = read_format_json(path, component="prior", fmt=PRIOR_FORMAT, version=PRIOR_VERSION,
                             describes="an fsqdeploy prior", missing_note="export the artifact again",
                             invalid_note=f". {_PRIOR_NOTE}")
        try:
            if d["precision"] != PRECISION:
                raise FSQDeployError(f"prior: '{path}' has precision {d['precision']!r}, this fsqdeploy codes "
                                     f"with {PRECISION}. {_PRIOR_NOTE}")
            prior = cls(tuple(d["levels"]), tuple(tuple(t) for t in d["frequencies"]))
            recorded = str(d["sha256"])
        except (KeyError, TypeError, ValueError) as e:
            raise FSQDeployError(f"prior: '{path}' has a malformed field ({e}). {_PRIOR_NOTE}") from None
        if prior.sha256.hex() != recorded:
            raise FSQDeployError(f"prior: '{path}' records sha256 {recorded[:8]}.. but its tables hash to "
                                 f"{prior.sha256.hex()[:8]}... {_PRIOR_NOTE}")
        return prior

    def cross_entropy_bits(self, indices: np.ndarray) -> float:
        """sum over the symbols of -log2(freq / 2^16): the ideal size of ``indices`` [N, D] under the tables."""
        tables = self._tables
        flat = tables.offsets[None, :] + np.asarray(indices, dtype=np.int64)
        return float(-np.log2(tables.freq[flat] / TOTAL).sum())

    @functools.cached_property
    def _tables(self) -> _Tables:
        return _Tables.build(self.levels, self.frequencies)


@dataclass(frozen=True)
class _Tables:
    """The tables flattened for numpy: column d's symbol s at ``offsets[d] + s``, and, for the
    decoder, column d's slot v (in [0, 2^16)) at ``d * 2^16 + v``."""

    offsets: np.ndarray  # int64 [D]: where each column's table starts
    freq: np.ndarray  # uint32 [sum L]
    cum: np.ndarray  # uint32 [sum L]: the sum of the frequencies of the smaller symbols of the column
    slot_symbol: np.ndarray  # int32 [D * 2^16]: the flat symbol whose slots [cum, cum + freq) hold v
    slot_freq: np.ndarray  # uint16 [D * 2^16]: that symbol's frequency (< 2^16: every level is >= 2)
    slot_bias: np.ndarray  # uint16 [D * 2^16]: v - cum

    @classmethod
    def build(cls, levels: tuple[int, ...], tables: tuple[tuple[int, ...], ...]) -> _Tables:
        freq = np.concatenate([np.asarray(t, dtype=np.uint32) for t in tables])
        offsets = np.concatenate([[0], np.cumsum(levels)[:-1]]).astype(np.int64)
        cum = np.concatenate([np.concatenate([[0], np.cumsum(t)[:-1]]) for t in tables]).astype(np.uint32)
        symbol = np.repeat(np.arange(freq.size, dtype=np.int32), freq)  # each column fills 2^16 slots
        slot = np.tile(np.arange(TOTAL, dtype=np.uint32), len(levels))
        return cls(offsets, freq, cum, symbol, freq[symbol].astype(np.uint16), (slot - cum[symbol]).astype(np.uint16))


def check_tables(levels: Sequence[int], tables: Sequence[Sequence[int]]) -> None:
    """Refuse tables the coder cannot use: a count per level, L_d entries, none zero, sums of 2^16."""
    if len(tables) != len(levels):
        raise FSQDeployError(f"prior: {len(tables)} frequency tables for {len(levels)} levels. {_PRIOR_NOTE}")
    for d, (level, table) in enumerate(zip(levels, tables)):
        if len(table) != level:
            raise FSQDeployError(f"prior: table {d} has {len(table)} frequencies, levels[{d}] = {level}. "
                                 f"{_PRIOR_NOTE}")
        low = min(table)
        if low < 1:
            raise FSQDeployError(f"prior: table {d} gives symbol {list(table).index(low)} frequency {low}; "
                                 f"every symbol needs at least 1 (a zero-frequency symbol cannot be coded). "
                                 f"{_PRIOR_NOTE}")
        if sum(table) != TOTAL:
            raise FSQDeployError(f"prior: table {d} sums to {sum(table)}, not 2^{PRECISION} = {TOTAL}. "
                                 f"{_PRIOR_NOTE}")


def quantize_counts(counts: Sequence[int]) -> tuple[int, ...]:
    """Counts of one column's symbols -> frequencies >= 1 summing to 2^16, integers only.

    Every symbol gets 1 (so a symbol never seen in training stays codable), and the other 2^16 - L
    are shared in proportion to the counts by largest remainder: floor shares first, then one more to
    the symbols with the largest remainders, the smaller symbol first on a tie. No counts at all
    (an empty training set) shares them as if every count were 1."""
    counts = [int(c) for c in counts]
    if len(counts) < 2 or len(counts) > TOTAL - 1 or min(counts) < 0:
        raise FSQDeployError(f"prior: cannot quantize counts for {len(counts)} symbols (need 2..{TOTAL - 1} "
                             "counts >= 0). Note: pass one count per symbol of a level")
    if sum(counts) == 0:
        counts = [1] * len(counts)
    spare, total = TOTAL - len(counts), sum(counts)
    shares = [divmod(c * spare, total) for c in counts]
    freqs = [1 + q for q, _ in shares]
    left = TOTAL - sum(freqs)  # < len(counts): each floor lost less than one
    order = sorted(range(len(counts)), key=lambda s: (-shares[s][1], s))
    for s in order[:left]:
        freqs[s] += 1
    return tuple(freqs)


# -- the coder --------------------------------------------------------------------------------------


def _flat_tables(prior: Prior, n: int) -> tuple[np.ndarray, _Tables]:
    """Each symbol's column offset: the table of flat symbol i is column i % D."""
    tables = prior._tables
    d = len(prior.levels)
    reps = -(-n // d)
    return np.tile(tables.offsets, reps)[:n], tables


def encode(indices: np.ndarray, prior: Prior) -> bytes:
    """int [N, D] indices (checked by the caller: in range, D = len(prior.levels)) -> the coding-1 payload:
    K lane states (u32 each, lane 0 first), then the bytes in the order the decoder reads them."""
    symbols = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    n = symbols.size
    k = lane_count(n)
    offsets, tables = _flat_tables(prior, n)
    flat = offsets + symbols
    freq, cum = tables.freq[flat], tables.cum[flat]
    # A state at or above f * 2^16 emits a byte before coding the symbol, and a second one when it is at
    # or above f * 2^24 (as uint64: that bound passes 2^32 for f >= 256, where no second byte comes).
    limit, limit2 = freq << np.uint32(16), freq.astype(np.uint64) << np.uint64(24)
    spare = np.uint32(TOTAL) - freq
    groups = -(-n // k)
    before = np.zeros((groups, k), dtype=np.uint32)  # each lane's state before each symbol
    read = np.zeros((groups, 2, k), dtype=bool)  # [j, r, lane]: the decoder reads a byte in round r
    x = np.full(k, STATE_LOW, dtype=np.uint32)
    eight = np.uint8(8)

    def step(xs: np.ndarray, f: np.ndarray, c: np.ndarray, lim: np.ndarray, lim2: np.ndarray, sp: np.ndarray,
             j: int, m: int) -> np.ndarray:
        one = np.greater_equal(xs, lim, out=read[j, 0, :m])
        two = np.greater_equal(xs, lim2, out=read[j, 1, :m])
        before[j, :m] = xs
        xs = xs >> ((one.view(np.uint8) + two.view(np.uint8)) * eight)
        # x -> (x // f) * 2^16 + x % f + c, written as x + (x // f) * (2^16 - f) + c: fewer numpy calls
        return xs // f * sp + xs + c

    full = n // k
    rest = n - full * k
    # rANS is last in, first out: code the symbols from the last to the first, so the decoder reads
    # them first to last. The last group may be partial: its lanes >= rest have no symbol there.
    if rest:
        lo = full * k
        x[:rest] = step(x[:rest], freq[lo:], cum[lo:], limit[lo:], limit2[lo:], spare[lo:], full, rest)
    rows = (a[: full * k].reshape(full, k) for a in (freq, cum, limit, limit2, spare))
    freq2, cum2, limit_2, limit2_2, spare2 = rows
    for j in range(full - 1, -1, -1):
        x = step(x, freq2[j], cum2[j], limit_2[j], limit2_2[j], spare2[j], j, k)
    # Round 0 reads a symbol's last emitted byte (bits 8..15 of its state when it emitted two, else
    # bits 0..7), round 1 the first (bits 0..7); the stream is group by group, round 0 then round 1,
    # lanes ascending: the decoder's order.
    low = before & np.uint32(0xFF)
    rounds = np.stack([np.where(read[:, 1], (before >> np.uint32(8)) & np.uint32(0xFF), low), low], axis=1)
    stream = rounds[read]
    return x.astype("<u4").tobytes() + stream.astype(np.uint8).tobytes()


def _most_symbols(stream_bytes: int, lanes: int, max_freq: int) -> int:
    """A bound on the symbols a payload of ``stream_bytes`` bytes after ``lanes`` lane states can
    hold, so a header that claims a huge grid over a tiny payload is refused before anything is
    allocated. A symbol of frequency f costs -log2(f / 2^16) >= (2^16 - f) / 2^16 bits, and the
    payload carries 8 bits per byte and at most 32 per lane state; a factor 4 spare on top."""
    return 32 * (stream_bytes + 4 * lanes) * TOTAL // (TOTAL - max_freq)


def decode(payload: bytes, prior: Prior, count: int) -> np.ndarray:
    """The coding-1 payload of ``count`` cells -> int32 indices [count, D]. Refuses a payload too
    short for its lane states, a lane state outside [2^24, 2^32), a stream that ends too early or
    leaves bytes over, and lanes that do not end in their initial state (what a damaged stream does)."""
    d = len(prior.levels)
    n = count * d
    k = lane_count(n)
    if len(payload) < 4 * k:
        raise _error(f"entropy-coded payload has {len(payload)} bytes, fewer than its {k} lane states of 4 bytes")
    x = np.frombuffer(payload, dtype="<u4", count=k).astype(np.uint32)
    if (x < STATE_LOW).any():
        lane = int(np.flatnonzero(x < STATE_LOW)[0])
        raise _error(f"lane {lane} starts in state {int(x[lane])}, below 2^24")
    stream = np.frombuffer(payload, dtype=np.uint8, offset=4 * k).astype(np.uint32)
    tables = prior._tables
    if n > _most_symbols(len(stream), k, int(tables.freq.max())):
        raise _error(f"entropy-coded payload of {len(payload)} bytes cannot hold {n} symbols under this prior "
                     "(the header's grid is too large for it)")
    column = (np.arange(n, dtype=np.uint32) % np.uint32(d)) << np.uint32(PRECISION)
    slots = np.empty(n, dtype=np.uint32)  # d * 2^16 + each symbol's slot
    sfreq, sbias = tables.slot_freq, tables.slot_bias
    shift, eight, low, low16 = np.uint32(16), np.uint32(8), np.uint32(STATE_LOW), np.uint32(0xFFFF)
    pos, total = 0, len(stream)
    full = n // k
    column2, slots2 = column[: full * k].reshape(full, k), slots[: full * k].reshape(full, k)

    def step(xs: np.ndarray, col: np.ndarray, out: np.ndarray) -> np.ndarray:
        nonlocal pos
        key = np.add(xs & low16, col, out=out)
        xs = sfreq.take(key) * (xs >> shift) + sbias.take(key)
        for _ in range(2):  # two rounds, each lane below 2^24 reading one byte, lanes ascending
            need = xs < low
            m = int(np.count_nonzero(need))
            if not m:
                break
            if pos + m > total:
                raise _error(f"entropy-coded payload ends after {total} bytes, before the last symbol")
            xs[need] = (xs[need] << eight) | stream[pos : pos + m]
            pos += m
        return xs

    for j in range(full):
        x = step(x, column2[j], slots2[j])
    if n > full * k:
        rest = n - full * k
        x[:rest] = step(x[:rest], column[full * k :], slots[full * k :])
    if pos != total:
        raise _error(f"entropy-coded payload has {total - pos} bytes left after the last symbol")
    if (x != low).any():
        lane = int(np.flatnonzero(x != low)[0])
        raise _error(f"lane {lane} ends in state {int(x[lane])}, not 2^24")
    offsets, _ = _flat_tables(prior, n)
    return (tables.slot_symbol[slots] - offsets).astype(np.int32).reshape(count, d)
