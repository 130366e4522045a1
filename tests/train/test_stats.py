"""Code statistics of actual indices (what `fsqdeploy eval` reports for the images it codes)."""

import math

import numpy as np
import pytest

from fsqdeploy.train.stats import index_stats


def test_index_stats_count_levels_and_whole_cells():
    levels = [4, 3]
    # 8 cells: dimension 0 uses levels 0 and 1 only (2 of 4 dead), dimension 1 all three levels
    indices = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 0], [1, 0], [0, 0], [1, 2]])
    s = index_stats(indices, levels)
    assert s["dead_levels"] == 2 and s["codebook_usage"] == pytest.approx(5 / 7)
    p1 = np.array([5, 1, 2]) / 8  # dimension 1's level counts: 0 five times, 1 once, 2 twice
    entropies = [math.log(2), float(-(p1 * np.log(p1)).sum())]
    assert s["perplexity"] == pytest.approx(np.mean(np.exp(entropies)))
    assert s["entropy_bits"] == pytest.approx(sum(entropies) / math.log(2))
    # whole cells: (0,0) x2, (0,1), (0,2), (1,0) x3, (1,2): five distinct tokens
    q = np.array([2, 1, 1, 3, 1]) / 8
    assert s["tokens_in_use"] == 5 and s["token_perplexity"] == pytest.approx(math.exp(-(q * np.log(q)).sum()))


def test_one_repeated_cell_is_one_token_and_no_spread():
    s = index_stats(np.tile([[2, 1, 0]], (50, 1)), [3, 3, 3])
    assert s["tokens_in_use"] == 1 and s["token_perplexity"] == pytest.approx(1.0)
    assert s["perplexity"] == pytest.approx(1.0) and s["dead_levels"] == 6 and s["entropy_bits"] == 0.0
