"""Figures that are not numbers: a metric computed from finite weights can still be NaN or
infinite (an empty class in an evaluation set, a layer that is all zeros in the parent). JSON
has no such values and a reader cannot tell what they mean, so each one is stored as null and
its path gets a reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NULL_REASONS = "null_reasons"


def finite_reason(value: float) -> str:
    """Why a non-finite figure is shown as null."""
    if math.isnan(value):
        return "not a number (NaN): undefined on this data, e.g. an empty set or 0/0"
    return "infinite: a ratio over a zero reference, e.g. a layer that is all zeros before"


def finite_or_null(obj: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """``obj`` with every NaN or infinite float replaced by None, and {path: reason} for each
    (paths are dotted keys and list indices)."""
    reasons: dict[str, str] = {}

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            reasons[where] = finite_reason(value)
            return None
        if isinstance(value, Mapping):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, path), reasons


def storable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A version's metrics as stored and served: finite numbers or null, with the reasons under
    ``null_reasons`` when any was replaced."""
    clean, reasons = finite_or_null(metrics)
    if reasons:
        clean[NULL_REASONS] = reasons
    return dict(clean)
