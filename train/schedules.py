"""Temperature annealing (paper 3.4): the temperature as a function of training progress.

``progress`` runs from 0 at the first step to 1 at the last, so the last step trains at exactly
``end`` and inference (which uses the final temperature) sees what training ended with.
"""

from __future__ import annotations

import math

SCHEDULES = ("exponential", "linear", "cosine", "constant")


def temperature_at(progress: float, start: float, end: float, kind: str = "exponential") -> float:
    p = min(max(progress, 0.0), 1.0)
    if kind == "exponential":  # the paper's choice: equal ratios per step, 1.0 -> 0.1 by default
        return start * (end / start) ** p
    if kind == "linear":
        return start + (end - start) * p
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "constant":  # train at the inference temperature throughout
        return end
    raise ValueError(f"unknown schedule {kind!r}")


def progress_of(step: int, total_steps: int) -> float:
    return step / (total_steps - 1) if total_steps > 1 else 1.0
