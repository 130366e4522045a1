"""Static interleaved rANS over FSQ indices (the .fsq payloads of codings 1 and 2), and its frozen prior.

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

Coding 2 is the same coder with each symbol's table chosen by the indices above and to the left of
it in its channel (the prior's context tables, L_d^2 per channel). The symbols go by anti-diagonals
of the grid, so a whole diagonal's contexts are known before any of its symbols is decoded and numpy
decodes a diagonal K lanes at a time; K follows the prior's own lane rule, set at export so that a
payload gets one lane per ~512 bytes (the context tables code far fewer bytes per symbol).
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


def lane_count(symbols: int, per_lane: int = SYMBOLS_PER_LANE) -> int:
    """K for a payload of ``symbols`` symbols (cells * D): floor(symbols / per_lane), clamped to [1, 32];
    coding 1's rule is one lane per 2048 symbols, coding 2's the prior's own ``per_lane``."""
    return max(1, min(MAX_LANES, symbols // per_lane))


def context_neighbours(grid: np.ndarray, levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Coding 2's contexts of an int [rows, cols, D] grid: each index's above and left neighbour in
    its channel, L_d // 2 where the neighbour lies outside the grid."""
    edge = np.asarray(levels, dtype=grid.dtype) // 2
    above = np.empty_like(grid)
    above[0] = edge
    above[1:] = grid[:-1]
    left = np.empty_like(grid)
    left[:, 0] = edge
    left[:, 1:] = grid[:, :-1]
    return above, left


@dataclass(frozen=True)
class Prior:
    """Frozen per-column frequency tables. Checked on construction: one table per level, ``L_d``
    entries each, every entry >= 1, each table summing to 2^16."""

    levels: tuple[int, ...]
    frequencies: tuple[tuple[int, ...], ...]
    # coding 2: per column d, L_d * L_d tables (context above * L_d + left), L_d entries each; None
    # for a prior that codes coding 1 only
    context_frequencies: tuple[tuple[tuple[int, ...], ...], ...] | None = None
    context_symbols_per_lane: int = SYMBOLS_PER_LANE  # coding 2's lane rule (context_lane_count)

    def __post_init__(self) -> None:
        levels = tuple(int(v) for v in self.levels)
        tables = tuple(tuple(int(f) for f in table) for table in self.frequencies)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "frequencies", tables)
        check_tables(levels, tables)
        if self.context_frequencies is not None:
            contexts = tuple(tuple(tuple(int(f) for f in table) for table in column)
                             for column in self.context_frequencies)
            object.__setattr__(self, "context_frequencies", contexts)
            check_context_tables(levels, contexts)
            per_lane = self.context_symbols_per_lane
            if isinstance(per_lane, bool) or not isinstance(per_lane, int) or not 1 <= per_lane < 1 << 32:
                raise FSQDeployError(f"prior: context_symbols_per_lane is {per_lane!r}, not an integer in "
                                     f"[1, 2^32). {_PRIOR_NOTE}")

    @property
    def coding(self) -> int:
        """The coding its files get: 2 (context tables) when it has them, else 1."""
        return 1 if self.context_frequencies is None else 2

    @functools.cached_property
    def sha256(self) -> bytes:
        """The raw digest of ``canonical_bytes``: what a coding-1 file's prior_hash holds."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    def canonical_bytes(self) -> bytes:
        """``FSQP``, precision u8, D u16, then per column d: L_d u16 and its L_d frequencies u16,
        little-endian (docs/bitstream.md). With context tables, then byte 01, the lane rule's
        symbols per lane u32, and per column d its L_d^2 tables of L_d frequencies u16 (context
        above * L_d + left, ascending)."""
        parts = [PRIOR_MAGIC, struct.pack("<BH", PRECISION, len(self.levels))]
        for level, table in zip(self.levels, self.frequencies):
            parts.append(struct.pack(f"<H{level}H", level, *table))
        if self.context_frequencies is not None:
            parts.append(struct.pack("<BI", 1, self.context_symbols_per_lane))
            for column in self.context_frequencies:
                parts.append(np.asarray(column, dtype="<u2").tobytes())
        return b"".join(parts)

    def to_json(self, source: dict[str, Any]) -> dict[str, Any]:
        """ART/prior.json: the tables, their hash and where they came from (``source``)."""
        d = {"format": PRIOR_FORMAT, "format_version": PRIOR_VERSION, "coding": self.coding,
             "precision": PRECISION, "levels": list(self.levels), "frequencies": [list(t) for t in self.frequencies]}
        if self.context_frequencies is not None:
            d["context_symbols_per_lane"] = self.context_symbols_per_lane
            d["context_frequencies"] = [[list(t) for t in column] for column in self.context_frequencies]
        return {**d, "sha256": self.sha256.hex(), "source": source}

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
            contexts = d.get("context_frequencies")
            prior = cls(tuple(d["levels"]), tuple(tuple(t) for t in d["frequencies"]),
                        None if contexts is None else tuple(tuple(tuple(t) for t in c) for c in contexts),
                        d.get("context_symbols_per_lane", SYMBOLS_PER_LANE))
            if d.get("coding", 1) != prior.coding:
                raise FSQDeployError(f"prior: '{path}' says coding {d.get('coding')!r} but its tables are for "
                                     f"coding {prior.coding}. {_PRIOR_NOTE}")
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

    def context_cross_entropy_bits(self, grid: np.ndarray) -> float:
        """The ideal size of a latent grid int [rows, cols, D] under the context tables (coding 2)."""
        entries = self._contexts.entries(np.asarray(grid, dtype=np.int64))
        return float(-np.log2(self._contexts.freq[entries] / TOTAL).sum())

    def context_lane_count(self, symbols: int) -> int:
        """Coding 2's K for ``symbols`` symbols: floor(symbols / context_symbols_per_lane), in [1, 32]."""
        return lane_count(symbols, self.context_symbols_per_lane)

    @functools.cached_property
    def _tables(self) -> _Tables:
        return _Tables.build(self.levels, self.frequencies)

    @functools.cached_property
    def _contexts(self) -> _ContextTables:
        if self.context_frequencies is None:
            raise FSQDeployError(f"prior: {self.sha256.hex()[:8]}.. has no context tables, so it cannot code "
                                 f"coding 2. {_PRIOR_NOTE}")
        return _ContextTables.build(self.levels, self.context_frequencies)


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


@dataclass(frozen=True)
class _ContextTables:
    """Coding 2's tables flattened for numpy: table ``t = base[d] + above * L_d + left`` of column d,
    its symbol s at entry ``start[t] + s``. The decoder finds the entry of slot v of table t with one
    searchsorted over ``keys`` (t * 2^16 + cum, ascending)."""

    levels: np.ndarray  # int64 [D]
    edge: np.ndarray  # int64 [D]: the context value of a neighbour outside the grid, L_d // 2
    base: np.ndarray  # int64 [D]: column d's first table
    start: np.ndarray  # int64 [T]: where each table's entries start
    freq: np.ndarray  # uint32 [entries]
    cum: np.ndarray  # uint32 [entries]
    keys: np.ndarray  # int64 [entries]: table * 2^16 + cum

    @classmethod
    def build(cls, levels: tuple[int, ...], columns: tuple[tuple[tuple[int, ...], ...], ...]) -> _ContextTables:
        lv = np.asarray(levels, dtype=np.int64)
        tables = [np.asarray(t, dtype=np.uint32) for column in columns for t in column]
        sizes = np.repeat(lv, lv * lv)  # every table of column d has L_d entries
        freq = np.concatenate(tables)
        cum = np.concatenate([np.concatenate([[0], np.cumsum(t)[:-1]]) for t in tables]).astype(np.uint32)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        table_of_entry = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
        base = np.concatenate([[0], np.cumsum(lv * lv)[:-1]]).astype(np.int64)
        return cls(lv, lv // 2, base, start, freq, cum, (table_of_entry << PRECISION) + cum)

    def tables(self, above: np.ndarray, left: np.ndarray) -> np.ndarray:
        """The table of each symbol [..., D] with these neighbours' indices in its column."""
        return self.base + above * self.levels + left

    def entries(self, grid: np.ndarray) -> np.ndarray:
        """int64 [rows, cols, D] indices -> each symbol's entry (its table's start + its index)."""
        return self.start[self.tables(*context_neighbours(grid, self.levels))] + grid


def check_context_tables(levels: Sequence[int], columns: Sequence[Sequence[Sequence[int]]]) -> None:
    """Coding 2's tables: per column d, L_d^2 tables, each one as a coding-1 table of L_d must be."""
    if len(columns) != len(levels):
        raise FSQDeployError(f"prior: context tables for {len(columns)} columns, {len(levels)} levels. "
                             f"{_PRIOR_NOTE}")
    for d, (level, column) in enumerate(zip(levels, columns)):
        if len(column) != level * level:
            raise FSQDeployError(f"prior: column {d} has {len(column)} context tables, levels[{d}]^2 = "
                                 f"{level * level}. {_PRIOR_NOTE}")
        for c, table in enumerate(column):
            problem = _table_problem(level, table, f"levels[{d}]")
            if problem:
                raise FSQDeployError(f"prior: context table {c} of column {d} {problem}. {_PRIOR_NOTE}")


def check_tables(levels: Sequence[int], tables: Sequence[Sequence[int]]) -> None:
    """Refuse tables the coder cannot use: a count per level, L_d entries, none zero, sums of 2^16."""
    if len(tables) != len(levels):
        raise FSQDeployError(f"prior: {len(tables)} frequency tables for {len(levels)} levels. {_PRIOR_NOTE}")
    for d, (level, table) in enumerate(zip(levels, tables)):
        problem = _table_problem(level, table, f"levels[{d}]")
        if problem:
            raise FSQDeployError(f"prior: table {d} {problem}. {_PRIOR_NOTE}")


def _table_problem(level: int, table: Sequence[int], name: str) -> str:
    """Why one table cannot code a column of ``level`` symbols, or "" when it can."""
    if len(table) != level:
        return f"has {len(table)} frequencies, {name} = {level}"
    low = min(table)
    if low < 1:
        return (f"gives symbol {list(table).index(low)} frequency {low}; every symbol needs at least 1 "
                "(a zero-frequency symbol cannot be coded)")
    if sum(table) != TOTAL:
        return f"sums to {sum(table)}, not 2^{PRECISION} = {TOTAL}"
    return ""


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
    return _encode_groups(tables.freq[flat], tables.cum[flat], np.arange(0, n, k), k)


def _encode_groups(freq: np.ndarray, cum: np.ndarray, starts: np.ndarray, k: int) -> bytes:
    """The rANS payload of symbols with these frequencies and cumulative frequencies (uint32 [n], in
    the decoder's order), in groups beginning at ``starts`` (ascending, the first 0, each at most k
    long): a group's j-th symbol goes to lane j. K lane states (u32 each, lane 0 first), then the
    bytes in the order the decoder reads them: group by group, round 0 then round 1, lanes ascending."""
    n = freq.size
    # A state at or above f * 2^16 emits a byte before coding the symbol, and a second one when it is at
    # or above f * 2^24 (as uint64: that bound passes 2^32 for f >= 256, where no second byte comes).
    limit, limit2 = freq << np.uint32(16), freq.astype(np.uint64) << np.uint64(24)
    spare = np.uint32(TOTAL) - freq
    groups = len(starts)
    ends = np.append(starts[1:], n).tolist()
    before = np.zeros((groups, k), dtype=np.uint32)  # each lane's state before each symbol
    read = np.zeros((groups, 2, k), dtype=bool)  # [j, r, lane]: the decoder reads a byte in round r
    x = np.full(k, STATE_LOW, dtype=np.uint32)
    eight = np.uint8(8)
    # rANS is last in, first out: code the groups from the last to the first, so the decoder reads
    # them first to last. A short group's lanes >= its length have no symbol there.
    for j, (lo, hi) in enumerate(zip(starts.tolist()[::-1], ends[::-1])):
        j = groups - 1 - j
        m = hi - lo
        xs = x[:m]
        one = np.greater_equal(xs, limit[lo:hi], out=read[j, 0, :m])
        two = np.greater_equal(xs, limit2[lo:hi], out=read[j, 1, :m])
        before[j, :m] = xs
        xs = xs >> ((one.view(np.uint8) + two.view(np.uint8)) * eight)
        # x -> (x // f) * 2^16 + x % f + c, written as x + (x // f) * (2^16 - f) + c: fewer numpy calls
        x[:m] = xs // freq[lo:hi] * spare[lo:hi] + xs + cum[lo:hi]
    # Round 0 reads a symbol's last emitted byte (bits 8..15 of its state when it emitted two, else
    # bits 0..7), round 1 the first (bits 0..7).
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


def _lane_states(payload: bytes, k: int) -> tuple[np.ndarray, _ByteStream]:
    """A payload's K lane states (each checked to start in [2^24, 2^32)) and the byte stream after them."""
    if len(payload) < 4 * k:
        raise _error(f"entropy-coded payload has {len(payload)} bytes, fewer than its {k} lane states of 4 bytes")
    x = np.frombuffer(payload, dtype="<u4", count=k).astype(np.uint32)
    if (x < STATE_LOW).any():
        lane = int(np.flatnonzero(x < STATE_LOW)[0])
        raise _error(f"lane {lane} starts in state {int(x[lane])}, below 2^24")
    return x, _ByteStream(np.frombuffer(payload, dtype=np.uint8, offset=4 * k).astype(np.uint32))


class _ByteStream:
    """The bytes after the lane states, read as the decoder's two rounds read them."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.pos, self.total = data, 0, len(data)

    _LOW, _EIGHT = np.uint32(STATE_LOW), np.uint32(8)

    def refill(self, xs: np.ndarray) -> None:
        """After a group's symbols, in place: two rounds, each lane below 2^24 reading one byte, lanes ascending."""
        low, pos = self._LOW, self.pos
        for _ in range(2):
            need = xs < low
            m = int(np.count_nonzero(need))
            if not m:
                break
            if pos + m > self.total:
                raise _error(f"entropy-coded payload ends after {self.total} bytes, before the last symbol")
            xs[need] = (xs[need] << self._EIGHT) | self.data[pos : pos + m]
            pos += m
        self.pos = pos

    def check_end(self, x: np.ndarray) -> None:
        """After the last symbol: every byte read, every lane back in its initial state 2^24."""
        if self.pos != self.total:
            raise _error(f"entropy-coded payload has {self.total - self.pos} bytes left after the last symbol")
        if (x != np.uint32(STATE_LOW)).any():
            lane = int(np.flatnonzero(x != np.uint32(STATE_LOW))[0])
            raise _error(f"lane {lane} ends in state {int(x[lane])}, not 2^24")


def decode(payload: bytes, prior: Prior, count: int) -> np.ndarray:
    """The coding-1 payload of ``count`` cells -> int32 indices [count, D]. Refuses a payload too
    short for its lane states, a lane state outside [2^24, 2^32), a stream that ends too early or
    leaves bytes over, and lanes that do not end in their initial state (what a damaged stream does)."""
    d = len(prior.levels)
    n = count * d
    k = lane_count(n)
    x, stream = _lane_states(payload, k)
    tables = prior._tables
    if n > _most_symbols(stream.total, k, int(tables.freq.max())):
        raise _error(f"entropy-coded payload of {len(payload)} bytes cannot hold {n} symbols under this prior "
                     "(the header's grid is too large for it)")
    column = (np.arange(n, dtype=np.uint32) % np.uint32(d)) << np.uint32(PRECISION)
    slots = np.empty(n, dtype=np.uint32)  # d * 2^16 + each symbol's slot
    sfreq, sbias = tables.slot_freq, tables.slot_bias
    shift, low16 = np.uint32(16), np.uint32(0xFFFF)
    full = n // k
    column2, slots2 = column[: full * k].reshape(full, k), slots[: full * k].reshape(full, k)

    refill = stream.refill

    def step(xs: np.ndarray, col: np.ndarray, out: np.ndarray) -> np.ndarray:
        key = np.add(xs & low16, col, out=out)
        xs = sfreq.take(key) * (xs >> shift) + sbias.take(key)
        refill(xs)
        return xs

    for j in range(full):
        x = step(x, column2[j], slots2[j])
    if n > full * k:
        rest = n - full * k
        x[:rest] = step(x[:rest], column[full * k :], slots[full * k :])
    stream.check_end(x)
    offsets, _ = _flat_tables(prior, n)
    return (tables.slot_symbol[slots] - offsets).astype(np.int32).reshape(count, d)


# -- coding 2: the same coder, each symbol's table chosen by its above and left neighbours ----------


def diagonal_order(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Coding 2's scan: the cells of a rows x cols grid by anti-diagonal t = r + c ascending, and
    within one by row ascending. Returns the row-major cell numbers in that order and the number of
    cells on each of the rows + cols - 1 diagonals. A cell's above and left neighbours lie on the
    diagonal before its own, so a whole diagonal decodes at once."""
    r, c = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    t = r + c
    return np.lexsort((r, t)), np.bincount(t, minlength=rows + cols - 1)


def _diagonal_groups(counts: np.ndarray, d: int, k: int) -> np.ndarray:
    """The first symbol of each group: every diagonal's cells * D symbols split into runs of K."""
    sizes = counts * d
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate([np.arange(first, first + size, k) for first, size in zip(firsts, sizes)])


def encode_context(indices: np.ndarray, rows: int, cols: int, prior: Prior) -> bytes:
    """int [rows * cols, D] indices (row-major cells, checked by the caller) -> the coding-2 payload.

    Column d's symbol at cell (r, c) is coded with table ``above * L_d + left`` of column d, the
    indices of cells (r - 1, c) and (r, c - 1) in column d, L_d // 2 for a neighbour outside the
    grid. The symbols go in diagonal order (``diagonal_order``; within a cell d = 0..D-1), each
    diagonal split into groups of K lanes (K = ``prior.context_lane_count``), coded as coding 1 codes
    its groups (docs/bitstream.md, "Coding 2")."""
    tables = prior._contexts
    d = len(prior.levels)
    grid = np.ascontiguousarray(indices, dtype=np.int64).reshape(rows, cols, d)
    order, counts = diagonal_order(rows, cols)
    entries = tables.entries(grid).reshape(rows * cols, d)[order].reshape(-1)
    k = prior.context_lane_count(entries.size)
    return _encode_groups(tables.freq[entries], tables.cum[entries], _diagonal_groups(counts, d, k), k)


def decode_context(payload: bytes, prior: Prior, rows: int, cols: int) -> np.ndarray:
    """The coding-2 payload of a rows x cols grid -> int32 indices [rows * cols, D], row-major cells.
    Refuses what ``decode`` refuses, in the same words."""
    tables = prior._contexts
    d = len(prior.levels)
    n = rows * cols * d
    k = prior.context_lane_count(n)
    x, stream = _lane_states(payload, k)
    if n > _most_symbols(stream.total, k, int(tables.freq.max())):
        raise _error(f"entropy-coded payload of {len(payload)} bytes cannot hold {n} symbols under this prior "
                     "(the header's grid is too large for it)")
    # The grid with a border row and column of edge values: cell (r, c) at [r + 1, c + 1], so its
    # above neighbour is at [r, c + 1] and its left one at [r + 1, c].
    grid = np.empty((rows + 1, cols + 1, d), dtype=np.int64)
    grid[0], grid[:, 0] = tables.edge, tables.edge
    # searchsorted(keys, q, "right") - 1 is searchsorted(keys[1:], q, "right"): q >= keys[0] = 0
    keys, freq, cum, start = tables.keys[1:], tables.freq, tables.cum, tables.start
    shift, low16, refill, search = np.uint32(16), np.uint32(0xFFFF), stream.refill, np.searchsorted
    for t in range(rows + cols - 1):
        r = np.arange(max(0, t - cols + 1), min(t, rows - 1) + 1)
        c = t - r
        table = tables.tables(grid[r, c + 1], grid[r + 1, c]).reshape(-1)
        entries = np.empty(table.size, dtype=np.int64)
        key_base = table << PRECISION
        for lo in range(0, table.size, k):
            hi = min(lo + k, table.size)
            xs = x[: hi - lo]
            slot = xs & low16
            entry = entries[lo:hi] = search(keys, key_base[lo:hi] + slot, side="right")
            xs = freq.take(entry) * (xs >> shift) + (slot - cum.take(entry))
            refill(xs)
            x[: hi - lo] = xs
        grid[r + 1, c + 1] = (entries - start[table]).reshape(-1, d)
    stream.check_end(x)
    return grid[1:, 1:].reshape(rows * cols, d).astype(np.int32)
