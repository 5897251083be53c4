"""GET /v1/methods' advice comes from the committed benchmark summary: the best approximate
method at the speed-up target, and each method's measured rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.methods import all_methods, measured


@pytest.fixture
def summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def write(methods: dict) -> None:
        path = tmp_path / "summary.json"
        path.write_text(json.dumps({"setting": "s", "source": "b", "methods": methods}))
        monkeypatch.setattr(measured, "_SUMMARY", path)
        measured._summary.cache_clear()

    yield write
    measured._summary.cache_clear()


def row(gap: float, speedup: float) -> dict:
    return {
        "gap_to_retrain_points": gap,
        "gap_to_retrain_points_sd": 0.1,
        "speedup_over_retrain": speedup,
    }


def test_the_best_method_is_the_closest_among_the_fast_enough(summary) -> None:
    summary(
        {
            "salun": row(0.5, 2.0),  # closest, too slow
            "scrub": row(1.5, 6.0),
            "scrub@fast": row(1.2, 12.0),
            "finetune@fast": row(3.0, 20.0),
        }
    )
    best = measured.choosing("unsir")["file_forgetting_benchmark"]["best_approximate"]
    assert best["method"] == "scrub" and best["configuration"] == "fast"
    text = measured.choosing("unsir")["files"]
    assert "scrub (fast configuration)" in text and "1.20 points" in text and "12.0x" in text
    assert "target" not in text
    assert [r["configuration"] for r in measured.file_forgetting("scrub")] == ["default", "fast"]
    assert measured.file_forgetting("pruning") == []


def test_a_best_above_the_gap_target_is_called_so(summary) -> None:
    summary({"finetune@fast": row(3.0, 20.0)})
    assert "above the 2-point target" in measured.choosing("unsir")["files"]


def test_no_summary_no_advice_beyond_exactness(summary, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(measured, "_SUMMARY", tmp_path / "absent.json")
    measured._summary.cache_clear()
    advice = measured.choosing("unsir")
    assert advice["file_forgetting_benchmark"]["best_approximate"] is None
    assert "auto" in advice["files"] and "unsir" in advice["classes"]


def test_the_committed_summary_names_registered_methods() -> None:
    measured._summary.cache_clear()
    names = {s.name for s in all_methods()}
    for label in measured._summary().get("methods", {}):
        assert label.partition("@")[0] in names
