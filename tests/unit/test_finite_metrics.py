"""No NaN or infinity in stored metrics or reports: finite weights can still give undefined
figures (a layer that is all zeros in the parent, an empty evaluation set). Each is null, with
a reason naming where and why."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from worker.evaluation.finite import NULL_REASONS, storable_metrics
from worker.evaluation.forgetting import _weight_distances


def _nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    parent = nn.Linear(3, 2)
    with torch.no_grad():
        parent.bias.zero_()  # finite, and all zeros: the relative change has no reference
    child = nn.Linear(3, 2)
    child.load_state_dict(parent.state_dict())
    with torch.no_grad():
        child.bias.add_(0.5)
    return parent, child


def test_finite_weights_can_give_an_infinite_figure_stored_as_null_with_a_reason() -> None:
    parent, child = _nets()
    distances = _weight_distances(None, None, None, [parent], [child])  # type: ignore[arg-type]
    metrics = {"test": {"accuracy": 0.9}, "forgetting": {"weight_distance": distances}}
    with pytest.raises(ValueError):
        json.dumps(metrics, allow_nan=False)  # the hazard: not valid JSON as it is

    stored = storable_metrics(metrics)

    json.dumps(stored, allow_nan=False)
    path = "forgetting.weight_distance.to_original.layers.per_layer.bias.relative"
    assert (
        stored["forgetting"]["weight_distance"]["to_original"]["layers"]["per_layer"]["bias"][
            "relative"
        ]
        is None
    )
    assert list(stored[NULL_REASONS]) == [path]
    assert "infinite" in stored[NULL_REASONS][path]
    assert stored["test"]["accuracy"] == 0.9


def test_nan_is_null_with_a_reason_and_finite_metrics_are_left_as_they_are() -> None:
    stored = storable_metrics({"auc": [0.5, math.nan], "n": 0, "ok": True})
    assert stored["auc"] == [0.5, None] and stored["n"] == 0 and stored["ok"] is True
    assert "NaN" in stored[NULL_REASONS]["auc[1]"]
    assert NULL_REASONS not in storable_metrics({"test": {"accuracy": 1.0}})


def test_a_report_shows_a_nan_figure_as_null_and_notes_why() -> None:
    from tests.unit.test_audit_html import _sections

    body, *_ = _sections()
    assert not [n for n in body["notes"] if "is null" in n]
    from worker.audit.builder import build_report_body

    efficacy = json.loads(json.dumps(body["efficacy"]))
    efficacy["per_class"]["bird"]["after"] = float("nan")  # e.g. no bird in the evaluation set
    again = build_report_body(
        request=body["request"],
        method=body["method"],
        versions=body["versions"],
        lineage=body["lineage"],
        efficacy=efficacy,
        membership_inference=body["membership_inference"],
        cost=body["cost"],
        notes=body["notes"],
        generated_at=body["generated_at"],
    )
    json.dumps(again, allow_nan=False)
    assert any(
        n.startswith("efficacy.per_class.bird.after is null: not a number") for n in again["notes"]
    ), again["notes"]
    assert again["efficacy"]["per_class"]["bird"]["after"] is None
