"""What the benchmark measured for each method, and which method to pick for which target.

``measured_file_forgetting.json`` (next to this module) is written by
``python -m bench.file_forgetting`` and committed with its full results
(``bench/results/file_forgetting.json``): per method and configuration, the average gap to an
exact retrain (points) and the speed-up over it. ``GET /v1/methods`` serves both.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["choosing", "file_forgetting"]

_SUMMARY = Path(__file__).with_name("measured_file_forgetting.json")
# what an approximate method must reach to be recommended (the benchmark's targets)
MAX_GAP_POINTS = 2.0
MIN_SPEEDUP = 5.0


@functools.cache
def _summary() -> dict[str, Any]:
    try:
        return dict(json.loads(_SUMMARY.read_text()))
    except (OSError, ValueError):  # not measured yet: the API just says so
        return {}


def file_forgetting(method: str) -> list[dict[str, Any]]:
    """The benchmark's rows for ``method`` (its defaults, and the ``fast`` budget variant)."""
    rows = []
    for label, row in sorted(_summary().get("methods", {}).items()):
        name, _, variant = label.partition("@")
        if name == method:
            rows.append({"configuration": variant or "default", **row})
    return rows


def _best_approximate() -> dict[str, Any] | None:
    """The approximate method/configuration with the smallest gap among those at least
    ``MIN_SPEEDUP`` times faster than the retrain."""
    fast_enough = [
        (row["gap_to_retrain_points"], label, row)
        for label, row in _summary().get("methods", {}).items()
        if (row.get("speedup_over_retrain") or 0) >= MIN_SPEEDUP
    ]
    if not fast_enough:
        return None
    _gap, label, row = min(fast_enough, key=lambda item: (item[0], item[1]))
    name, _, variant = label.partition("@")
    return {"method": name, "configuration": variant or "default", **row}


def choosing(default_class_method: str) -> dict[str, Any]:
    """Plain advice per target, with the measured figures behind it."""
    best = _best_approximate()
    files = (
        "method auto (or sisa) is exact: on a SISA model it retrains only the shards that held "
        "the files; on a monolithic or imported model it is a full retrain. For a faster, "
        "approximate result on a monolithic model, pick an approximate method explicitly"
    )
    if best is not None:
        meets = best["gap_to_retrain_points"] <= MAX_GAP_POINTS
        files += (
            f"; the benchmark's best at >= {MIN_SPEEDUP:g}x the retrain's speed is "
            f"{best['method']} ({best['configuration']} configuration): "
            f"{best['gap_to_retrain_points']:.2f} points from the retrain on average, "
            f"{best['speedup_over_retrain']:.1f}x faster"
            + ("" if meets else f" (above the {MAX_GAP_POINTS:g}-point target)")
        )
    return {
        "files": files + ".",
        "classes": (
            f"method auto uses {default_class_method}; sisa and retrain are exact; every method "
            "listing 'classes' in its targets accepts a class."
        ),
        "file_forgetting_benchmark": {
            "setting": _summary().get("setting"),
            "source": _summary().get("source"),
            "best_approximate": best,
        },
    }
