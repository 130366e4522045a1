"""Coding 2, rANS with context tables: exact round trips, equality with the spec's scalar coder, the
golden and lane vectors of docs/bitstream.md, the prior's context tables and every refusal."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsqdeploy.entropy import (
    SYMBOLS_PER_LANE,
    TOTAL,
    Prior,
    decode_context,
    diagonal_order,
    encode_context,
    quantize_counts,
)
from fsqdeploy.errors import FSQDeployError

# docs/bitstream.md's coding-2 golden vector: levels [3, 2], a 2 x 3 grid, tables from golden_counts.
GOLDEN_LEVELS = (3, 2)
GOLDEN_GRID = np.array([[[0, 1], [2, 0], [1, 1]], [[2, 1], [0, 0], [1, 0]]])  # [rows, cols, D]
GOLDEN_SHA256 = "54e3398a1c71a90646e757502ddbe637b4c0b3e6f5e0f467f4ba1e2a6376529b"
GOLDEN_PAYLOAD = "3b008c2acf18df2082281afd98"
# docs/bitstream.md's coding-2 lane vector (levels 8,5,5,5, 23 x 29 cells, 256 symbols per lane: K = 10).
LANES_PAYLOAD_SHA256 = "4e278b6604d9c3cc5ea2bb917ea76cd3143c2519627d5cda6b6f1dcee80bb960"


def golden_counts(level: int, context: int) -> list[int]:
    """Counts for table ``context`` of a column of ``level`` symbols: symbol s gets (s + 1)^2, and
    the context's own guess, symbol context % level, 1000 more."""
    return [(s + 1) ** 2 + (1000 if s == context % level else 0) for s in range(level)]


def context_prior(levels: tuple[int, ...], per_lane: int = SYMBOLS_PER_LANE, counts=golden_counts) -> Prior:
    tables = [quantize_counts([1] * level) for level in levels]
    contexts = [[quantize_counts(counts(level, c)) for c in range(level * level)] for level in levels]
    return Prior(levels, tables, contexts, per_lane)


def reference_encode(grid: np.ndarray, prior: Prior) -> bytes:
    """docs/bitstream.md's coding-2 encoder on Python ints, one symbol at a time, from the spec alone."""
    rows, cols, d = grid.shape
    levels, contexts = prior.levels, prior.context_frequencies
    symbols = []  # (f, c) in the decoder's order, and the diagonal each belongs to
    for t in range(rows + cols - 1):
        for r in range(max(0, t - cols + 1), min(t, rows - 1) + 1):
            c = t - r
            for ch in range(d):
                above = int(grid[r - 1, c, ch]) if r else levels[ch] // 2
                left = int(grid[r, c - 1, ch]) if c else levels[ch] // 2
                table = contexts[ch][above * levels[ch] + left]
                s = int(grid[r, c, ch])
                symbols.append((table[s], sum(table[:s]), t))
    n = len(symbols)
    k = max(1, min(32, n // prior.context_symbols_per_lane))
    groups, position = [], 0  # (first symbol, count): each diagonal in runs of K
    for t in range(rows + cols - 1):
        size = sum(1 for s in symbols if s[2] == t)
        groups += [(position + g, min(k, size - g)) for g in range(0, size, k)]
        position += size
    x = [1 << 24] * k
    emitted: dict[int, list[int]] = {}
    for first, count in reversed(groups):
        for j in reversed(range(count)):
            f, c, _ = symbols[first + j]
            emitted[first + j] = []
            while x[j] >= f << 16:
                emitted[first + j].append(x[j] & 0xFF)
                x[j] >>= 8
            x[j] = (x[j] // f << 16) + x[j] % f + c
    stream = []
    for first, count in groups:
        group = range(first, first + count)
        stream += [emitted[i][-1] for i in group if emitted[i]]
        stream += [emitted[i][0] for i in group if len(emitted[i]) == 2]
    return struct.pack(f"<{k}I", *x) + bytes(stream)


def lanes_vector() -> tuple[Prior, np.ndarray]:
    levels = (8, 5, 5, 5)
    prior = context_prior(levels, per_lane=256)
    seed, symbols = 1, []
    for i in range(23 * 29 * 4):
        seed = (seed * 1103515245 + 12345) % 2**32
        u = seed >> 16
        symbols.append(((u * u) >> 16) * levels[i % 4] >> 16)
    return prior, np.array(symbols).reshape(23, 29, 4)


@st.composite
def coded_grid(draw, max_side: int = 7) -> tuple[Prior, np.ndarray]:
    """Random small levels and context tables from random counts, a random grid, a random lane rule."""
    levels = tuple(draw(st.lists(st.integers(2, 6), min_size=1, max_size=3)))
    contexts = [[quantize_counts(draw(st.lists(st.integers(0, 10**4), min_size=level, max_size=level)))
                 for _ in range(level * level)] for level in levels]
    prior = Prior(levels, [quantize_counts([1] * level) for level in levels], contexts,
                  draw(st.integers(1, 40)))
    rows, cols = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    grid = np.stack([rng.integers(0, level, (rows, cols)) for level in levels], axis=-1)
    return prior, grid


def cells(grid: np.ndarray) -> np.ndarray:
    return grid.reshape(-1, grid.shape[-1])


def test_diagonal_order() -> None:
    order, counts = diagonal_order(2, 3)
    # cells (r, c) numbered r * 3 + c: (0,0) | (0,1) (1,0) | (0,2) (1,1) | (1,2)
    assert order.tolist() == [0, 1, 3, 2, 4, 5] and counts.tolist() == [1, 2, 2, 1]
    order, counts = diagonal_order(3, 1)
    assert order.tolist() == [0, 1, 2] and counts.tolist() == [1, 1, 1]


def test_golden_prior_and_payload() -> None:
    prior = context_prior(GOLDEN_LEVELS)
    assert prior.coding == 2
    assert prior.sha256.hex() == GOLDEN_SHA256
    payload = encode_context(cells(GOLDEN_GRID), 2, 3, prior)
    assert payload.hex() == GOLDEN_PAYLOAD
    assert payload == reference_encode(GOLDEN_GRID, prior)
    assert np.array_equal(decode_context(payload, prior, 2, 3), cells(GOLDEN_GRID))


def test_lanes_vector_is_pinned() -> None:
    prior, grid = lanes_vector()
    assert prior.context_lane_count(grid.size) == 10
    payload = encode_context(cells(grid), 23, 29, prior)
    assert hashlib.sha256(payload).hexdigest() == LANES_PAYLOAD_SHA256
    assert payload == reference_encode(grid, prior)
    assert np.array_equal(decode_context(payload, prior, 23, 29), cells(grid))


@given(case=coded_grid())
@settings(max_examples=150, deadline=None)
def test_round_trip_exact_and_equal_to_the_spec(case: tuple[Prior, np.ndarray]) -> None:
    prior, grid = case
    rows, cols, _ = grid.shape
    payload = encode_context(cells(grid), rows, cols, prior)
    assert payload == reference_encode(grid, prior)
    back = decode_context(payload, prior, rows, cols)
    assert back.dtype == np.int32 and np.array_equal(back, cells(grid))


def test_contexts_pay_on_a_correlated_grid() -> None:
    """On a smooth grid (neighbours mostly equal) tables counted from it code far below coding 1's."""
    from fsqdeploy.export.prior import build_prior

    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.integers(-1, 2, (40, 60, 2)) * (rng.random((40, 60, 2)) < 0.2), axis=1)
    grid = np.clip(walk + 3, 0, 7).astype(np.int64)
    prior = build_prior((8, 8), [grid])
    assert prior.coding == 2
    contextual = len(encode_context(cells(grid), 40, 60, prior))
    from fsqdeploy.entropy import encode

    plain = len(encode(cells(grid), prior))
    assert contextual < 0.6 * plain
    assert contextual * 8 <= 1.01 * prior.context_cross_entropy_bits(grid) + 8 * 4 * prior.context_lane_count(grid.size)


def test_prior_json_round_trip_and_hash(tmp_path) -> None:
    prior = context_prior(GOLDEN_LEVELS, per_lane=300)
    prior.save(tmp_path / "prior.json", {"data": "test"})
    back = Prior.load(tmp_path / "prior.json")
    assert back == prior and back.sha256 == prior.sha256
    # the lane rule and every context table are under the hash
    assert context_prior(GOLDEN_LEVELS, per_lane=301).sha256 != prior.sha256
    plain = Prior(prior.levels, prior.frequencies)
    assert plain.coding == 1 and plain.canonical_bytes() == prior.canonical_bytes()[: len(plain.canonical_bytes())]
    import json

    d = json.loads((tmp_path / "prior.json").read_text())
    d["coding"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(FSQDeployError, match=r"says coding 1 but its tables are for coding 2"):
        Prior.load(tmp_path / "bad.json")
    d["coding"] = 2
    d["context_frequencies"][1][2] = [TOTAL - 1, 1]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(FSQDeployError, match=r"records sha256 .* but its tables hash to"):
        Prior.load(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "contexts, match",
    [
        ([[(TOTAL // 2, TOTAL // 2)] * 4], r"column 0 has 4 context tables, levels\[0\]\^2 = 9"),
        ([[(TOTAL - 2, 1, 1)] * 8 + [(TOTAL - 1, 1, 0)]], r"context table 8 of column 0 gives symbol 2 frequency 0"),
        ([[(TOTAL - 2, 1, 1)] * 8 + [(TOTAL, 1, 1)]], r"context table 8 of column 0 sums to 65538"),
        ([[(TOTAL - 2, 1, 1)] * 8 + [(TOTAL - 1, 1)]],
         r"context table 8 of column 0 has 2 frequencies, levels\[0\] = 3"),
        ([], r"context tables for 0 columns, 1 levels"),
    ],
)
def test_context_tables_refused(contexts, match: str) -> None:
    with pytest.raises(FSQDeployError, match=match):
        Prior((3,), [quantize_counts([1, 1, 1])], contexts)


def test_a_prior_without_contexts_cannot_code_coding_2() -> None:
    prior = Prior((3,), [quantize_counts([1, 1, 1])])
    with pytest.raises(FSQDeployError, match=r"has no context tables, so it cannot code coding 2"):
        encode_context(np.zeros((4, 1), dtype=np.int64), 2, 2, prior)


def test_damaged_payloads_refused() -> None:
    prior = context_prior(GOLDEN_LEVELS)
    payload = encode_context(cells(GOLDEN_GRID), 2, 3, prior)
    cases = [
        (payload[:3], r"has 3 bytes, fewer than its 1 lane states"),
        (b"\x00\x00\x00\x00" + payload[4:], r"lane 0 starts in state 0, below 2\^24"),
        (payload + b"\x00", r"1 bytes left after the last symbol"),
        (payload[:-1], r"ends after|ends in state|left after"),
    ]
    for data, match in cases:
        with pytest.raises(FSQDeployError, match=match):
            decode_context(data, prior, 2, 3)
    one_lane = context_prior(GOLDEN_LEVELS, per_lane=2**31)  # the same tables, K = 1 on any grid
    with pytest.raises(FSQDeployError, match=r"of 13 bytes cannot hold 600000000 symbols under this prior"):
        decode_context(payload, one_lane, 10000, 30000)


@given(case=coded_grid(max_side=4), flip=st.integers(0, 2**20))
@settings(max_examples=100, deadline=None)
def test_decoder_never_crashes_on_altered_payloads(case: tuple[Prior, np.ndarray], flip: int) -> None:
    prior, grid = case
    rows, cols, _ = grid.shape
    payload = bytearray(encode_context(cells(grid), rows, cols, prior))
    at = flip % (8 * len(payload))
    payload[at // 8] ^= 1 << (at % 8)
    try:
        back = decode_context(bytes(payload), prior, rows, cols)
    except FSQDeployError as e:
        assert str(e).startswith("bitstream: ") and "\n" not in str(e)
    else:  # a flip the coder cannot see decodes to in-range indices of the same shape
        assert back.shape == cells(grid).shape
        assert (back >= 0).all() and (back < np.array(prior.levels)).all()
