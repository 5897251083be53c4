"""Learning-rate schedules as pure functions of the step within one cycle.

A cycle is one slice's training: the schedule restarts with every slice, so a shard resumed from
the checkpoint before slice k follows the same learning rates as a shard trained from scratch.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "onecycle", "cosine"]

# One-cycle as in Smith & Topin (and torch's OneCycleLR): start at peak/25, end at peak/1e4.
_ONECYCLE_START = 1 / 25
_ONECYCLE_END = 1 / 1e4


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def lr_at(schedule: Schedule, peak: float, *, step: int, total: int, warmup: float) -> float:
    """Learning rate of step ``step`` (0-based) of a ``total``-step cycle."""
    if schedule == "constant" or total <= 1:
        return peak
    if not 0 <= step < total:
        raise ValueError(f"step {step} outside a {total}-step cycle")
    warm = round(warmup * total)
    if schedule == "onecycle":
        if step < warm:
            return _cosine(peak * _ONECYCLE_START, peak, step / warm)
        rest = max(1, total - 1 - warm)
        return _cosine(peak, peak * _ONECYCLE_END, (step - warm) / rest)
    if schedule == "cosine":
        if step < warm:
            return peak * (step + 1) / (warm + 1)  # linear warm-up, never exactly 0
        rest = max(1, total - warm)
        return _cosine(peak, 0.0, (step - warm) / rest)
    raise ValueError(f"unknown schedule {schedule!r}; use 'constant', 'onecycle' or 'cosine'")
