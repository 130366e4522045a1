"""Adaptive quantization levels (paper 3.5) under a fixed bit budget.

The paper reallocates levels "based on input complexity" without equations. We use the EMA level
statistics: a dimension whose usage entropy fills its levels (utilisation = entropy / log2 L near 1)
is starved, one that uses few of its levels is wasting bits. Dimensions are paired from the two
ends of the utilisation order; each pair moves one level from the wasteful to the starved dimension
when the utilisation gap is large enough and the total bits (sum log2 L_d) stay within the budget.
Each dimension moves at most once per call, so every change is backed by fresh statistics; the
trainer calls this at scheduled epochs and then freezes the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fsqdeploy.metrics import code_bits


def usage_entropy_bits(counts: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Per-dimension entropy (bits) of the EMA level counts [D, Lmax]."""
    out = np.zeros(len(levels))
    for d, L in enumerate(levels):
        c = counts[d, :L].astype(np.float64)
        if c.sum() <= 0:
            continue
        p = c / c.sum()
        p = p[p > 0]
        out[d] = -(p * np.log2(p)).sum()
    return out


def reallocate_levels(
    levels: Sequence[int],
    counts: np.ndarray,
    budget_bits: float,
    min_level: int = 2,
    max_level: int = 64,
    min_gap: float = 0.1,
) -> list[int]:
    """Return new levels with ``code_bits(new) <= budget_bits`` and the same length."""
    new = [int(v) for v in levels]
    util = usage_entropy_bits(counts, new) / np.log2(np.asarray(new, dtype=np.float64))
    order = list(np.argsort(util, kind="stable"))  # most wasteful first
    lo, hi = 0, len(order) - 1
    while lo < hi:
        donor, receiver = int(order[lo]), int(order[hi])
        if util[receiver] - util[donor] < min_gap:
            break
        if new[donor] > min_level and new[receiver] < max_level:
            trial = list(new)
            trial[donor] -= 1
            trial[receiver] += 1
            if code_bits(trial) <= budget_bits + 1e-9:
                new = trial
        lo, hi = lo + 1, hi - 1
    return new
