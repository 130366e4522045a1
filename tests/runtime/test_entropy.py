"""The coding-1 rANS coder and its prior: exact round trips, the spec's scalar coder, the pinned
multi-lane vector, table quantization and every refusal."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsqdeploy.entropy import (
    MAX_LANES,
    SYMBOLS_PER_LANE,
    TOTAL,
    Prior,
    check_tables,
    decode,
    encode,
    lane_count,
    quantize_counts,
)
from fsqdeploy.errors import FSQDeployError

# The prior of docs/bitstream.md's coding-1 golden vector, its canonical bytes and sha256.
GOLDEN_LEVELS = (3, 5, 7)
GOLDEN_TABLES = ((32768, 16384, 16384), (30000, 20000, 10000, 5000, 536), (1, 2, 3, 65524, 2, 2, 2))
GOLDEN_PRIOR_BYTES = "46535150100300030000800040004005003075204e1027881318020700010002000300f4ff020002000200"
GOLDEN_PRIOR_SHA256 = "1b8a26fe2f899439e9efd51432a60200ce541d9f1e99c53161126442375ea29d"
GOLDEN_INDICES = np.array([[0, 0, 0], [2, 4, 6], [1, 2, 3], [2, 0, 5]])
GOLDEN_PAYLOAD = "0164dd0140ffd7ffa581fc00"
# docs/bitstream.md's lane vector: levels 8,5,5,5, 2601 cells (K = 5, a partial last group), counts (s+1)^2.
LANES_PAYLOAD_SHA256 = "58fbbecd7f1a55823e2aaf8240789af927eef3f42c9b2031e36f9b735f35358b"


def golden_prior() -> Prior:
    return Prior(GOLDEN_LEVELS, GOLDEN_TABLES)


def reference_encode(symbols: list[int], tables: tuple[tuple[int, ...], ...], lanes: int) -> bytes:
    """docs/bitstream.md's encoder, one symbol at a time on Python ints, written from the spec alone."""
    d = len(tables)
    cums = [[sum(t[:s]) for s in range(len(t))] for t in tables]
    x = [1 << 24] * lanes
    emitted: dict[int, list[int]] = {}  # symbol i -> the bytes emitted before coding it, in emission order
    for i in range(len(symbols) - 1, -1, -1):
        k, t, s = i % lanes, i % d, symbols[i]
        f, c = tables[t][s], cums[t][s]
        emitted[i] = []
        while x[k] >= f << 16:
            emitted[i].append(x[k] & 0xFF)
            x[k] >>= 8
        x[k] = (x[k] // f << 16) + x[k] % f + c
    stream = []
    for start in range(0, len(symbols), lanes):  # group by group; round 0, then round 1, lanes ascending
        group = range(start, min(start + lanes, len(symbols)))
        stream += [emitted[i][-1] for i in group if emitted[i]]
        stream += [emitted[i][0] for i in group if len(emitted[i]) == 2]
    return struct.pack(f"<{lanes}I", *x) + bytes(stream)


def lanes_vector() -> tuple[Prior, np.ndarray]:
    levels = (8, 5, 5, 5)
    prior = Prior(levels, [quantize_counts([(s + 1) ** 2 for s in range(level)]) for level in levels])
    seed, symbols = 1, []
    for i in range(2601 * 4):
        seed = (seed * 1103515245 + 12345) % 2**32
        u = seed >> 16
        symbols.append(((u * u) >> 16) * levels[i % 4] >> 16)
    return prior, np.array(symbols).reshape(2601, 4)


@st.composite
def coded_case(draw, max_cells: int = 40) -> tuple[Prior, np.ndarray]:
    """Random levels, tables from random counts (some zero, some skewed), indices drawn anywhere."""
    levels = draw(st.lists(st.integers(2, 300), min_size=1, max_size=6))
    tables = [quantize_counts(draw(st.lists(st.integers(0, 10**6), min_size=level, max_size=level)))
              for level in levels]
    cells = draw(st.integers(1, max_cells))
    seed = draw(st.integers(0, 2**32 - 1))
    indices = np.random.default_rng(seed).integers(0, levels, size=(cells, len(levels)))
    return Prior(levels, tables), indices


def test_golden_prior_and_payload() -> None:
    prior = golden_prior()
    assert prior.canonical_bytes().hex() == GOLDEN_PRIOR_BYTES
    assert prior.sha256.hex() == GOLDEN_PRIOR_SHA256 == hashlib.sha256(bytes.fromhex(GOLDEN_PRIOR_BYTES)).hexdigest()
    payload = encode(GOLDEN_INDICES, prior)
    assert payload.hex() == GOLDEN_PAYLOAD
    assert reference_encode(GOLDEN_INDICES.ravel().tolist(), GOLDEN_TABLES, 1) == payload
    np.testing.assert_array_equal(decode(payload, prior, 4), GOLDEN_INDICES)


def test_lanes_vector_is_pinned() -> None:
    prior, indices = lanes_vector()
    assert lane_count(indices.size) == 5 and indices.size % 5 == 4
    payload = encode(indices, prior)
    assert hashlib.sha256(payload).hexdigest() == LANES_PAYLOAD_SHA256
    assert reference_encode(indices.ravel().tolist(), prior.frequencies, 5) == payload
    np.testing.assert_array_equal(decode(payload, prior, 2601), indices)


@given(case=coded_case())
@settings(max_examples=150, deadline=None)
def test_round_trip_exact_and_equal_to_the_spec(case: tuple[Prior, np.ndarray]) -> None:
    prior, indices = case
    payload = encode(indices, prior)
    assert payload == reference_encode(indices.ravel().tolist(), prior.frequencies, lane_count(indices.size))
    back = decode(payload, prior, len(indices))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, indices)


@pytest.mark.parametrize("symbols", [2047, 2048, 4095, 2048 * 7 + 3, 2048 * 33 + 1])
def test_round_trip_across_lane_counts(symbols: int) -> None:
    """K = n // 2048 clamped to [1, 32]: at, below and above the steps, full and partial last groups."""
    levels = (8, 5, 5, 5, 3, 7, 2, 2, 16, 11, 13)[: max(1, min(11, symbols % 11 + 1))]
    d = len(levels)
    cells = -(-symbols // d)
    rng = np.random.default_rng(symbols)
    prior = Prior(levels, [quantize_counts(rng.integers(0, 100, level) ** 3) for level in levels])
    indices = rng.integers(0, levels, size=(cells, d))
    payload = encode(indices, prior)
    k = lane_count(cells * d)
    assert k == max(1, min(MAX_LANES, cells * d // SYMBOLS_PER_LANE))
    assert payload == reference_encode(indices.ravel().tolist(), prior.frequencies, k)
    np.testing.assert_array_equal(decode(payload, prior, cells), indices)


def test_size_is_close_to_the_cross_entropy() -> None:
    """On skewed symbols the payload is within 1% of the tables' cross-entropy (lane flushes included)."""
    rng = np.random.default_rng(1)
    levels = (8, 5, 5, 5)
    probs = [rng.dirichlet(np.full(level, 0.5)) for level in levels]
    indices = np.stack([rng.choice(level, size=6144, p=p) for level, p in zip(levels, probs)], axis=1)
    prior = Prior(levels, [quantize_counts(np.bincount(indices[:, d], minlength=level))
                           for d, level in enumerate(levels)])
    ideal = prior.cross_entropy_bits(indices) / 8
    size = len(encode(indices, prior))
    assert ideal < size < 1.01 * ideal


def test_quantize_counts() -> None:
    freqs = quantize_counts([0, 1, 2, 1000])
    assert sum(freqs) == TOTAL and min(freqs) >= 1 and freqs[0] == 1  # an unseen symbol keeps 1
    assert quantize_counts([5, 5]) == (32768, 32768)
    assert quantize_counts([0, 0, 0]) == (21846, 21845, 21845)  # no counts: even, the remainder to the smallest
    assert quantize_counts([1, 1, 1]) == quantize_counts([7, 7, 7])
    # largest remainder: 65533 spare over counts 1:2 -> 21844.33 and 43688.67; the larger remainder wins the 1 left
    assert quantize_counts([1, 2, 0]) == (21845, 43690, 1)
    for counts in ([3] * 65535, [10**12, 1]):
        freqs = quantize_counts(counts)
        assert sum(freqs) == TOTAL and min(freqs) >= 1
    with pytest.raises(FSQDeployError, match="prior: cannot quantize counts for 1 symbols"):
        quantize_counts([4])
    with pytest.raises(FSQDeployError, match="counts >= 0"):
        quantize_counts([4, -1])


@pytest.mark.parametrize(
    ("levels", "tables", "match"),
    [
        ((3, 5), (GOLDEN_TABLES[0],), "prior: 1 frequency tables for 2 levels"),
        ((3,), ((32768, 32768),), r"prior: table 0 has 2 frequencies, levels\[0\] = 3"),
        ((3,), ((0, 32768, 32768),), "prior: table 0 gives symbol 0 frequency 0; every symbol needs at least 1"),
        ((2, 3), ((1, 65535), (1, 2, 3)), r"prior: table 1 sums to 6, not 2\^16 = 65536"),
        ((2,), ((65536, 1),), r"prior: table 0 sums to 65537"),
    ],
)
def test_tables_refused(levels: tuple, tables: tuple, match: str) -> None:
    with pytest.raises(FSQDeployError, match="^" + match):
        Prior(levels, tables)
    with pytest.raises(FSQDeployError, match="^" + match):
        check_tables(levels, tables)


def test_damaged_payloads_refused() -> None:
    prior = golden_prior()
    payload = bytes.fromhex(GOLDEN_PAYLOAD)
    cases = {
        payload[:3]: "payload has 3 bytes, fewer than its 1 lane states of 4 bytes",
        bytes(4) + payload[4:]: "lane 0 starts in state 0, below 2.24",
        payload[:-1]: "payload ends after 7 bytes, before the last symbol",
        payload + b"\0": "payload has 1 bytes left after the last symbol",
        payload[:-1] + bytes([payload[-1] ^ 1]): "lane 0 ends in state 16777217, not 2.24",
    }
    for data, match in cases.items():
        with pytest.raises(FSQDeployError, match="^bitstream: entropy-coded |^bitstream: lane 0 "):
            decode(data, prior, 4)
        with pytest.raises(FSQDeployError, match=match):
            decode(data, prior, 4)


@given(case=coded_case(max_cells=12), flip=st.integers(0, 2**20))
@settings(max_examples=100, deadline=None)
def test_decoder_never_crashes_on_altered_payloads(case: tuple[Prior, np.ndarray], flip: int) -> None:
    """Without the CRC in front, a flipped bit either decodes to valid indices or is one refusal line."""
    prior, indices = case
    data = bytearray(encode(indices, prior))
    data[flip // 8 % len(data)] ^= 1 << (flip % 8)
    try:
        back = decode(bytes(data), prior, len(indices))
    except FSQDeployError as err:
        assert str(err).startswith("bitstream: ") and "\n" not in str(err)
    else:
        assert back.shape == indices.shape and (back >= 0).all() and (back < np.asarray(prior.levels)).all()


def test_cross_entropy_bits() -> None:
    prior = golden_prior()
    expected = -sum(np.log2(GOLDEN_TABLES[d][s] / TOTAL) for row in GOLDEN_INDICES for d, s in enumerate(row))
    assert prior.cross_entropy_bits(GOLDEN_INDICES) == pytest.approx(expected)
