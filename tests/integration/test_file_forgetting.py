"""Forgetting files from one monolithic model (trained here or imported) with an approximate
method, end to end in-process: the request, the new version, the honest report; ``auto`` stays
exact; a method that cannot forget files is refused with the targets it supports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from app.audit.schema import ReportBody
from app.db.models import DeletionRequest, Sample
from app.db.session import session_scope
from tests.integration.test_class_forgetting import (
    MONOLITHIC,
    _checkpoints,
    _import,
    _problem,
    _save,
)
from worker.audit.reference import NO_REFERENCE_NOTE
from worker.constituents import CHECKPOINTS
from worker.flows.common import store

FAST = {
    "scrub": {"epochs": 2, "max_steps": 1, "batch_size": 32, "forget_batch_size": 8},
    "salun": {"epochs": 1, "batch_size": 32},
    "pruning": {"epochs": 1, "batch_size": 32},
    "dummy_labels": {"epochs": 1, "batch_size": 32},
}


def _train_files(dataset_id: int, count: int) -> list[str]:
    with session_scope() as session:
        paths = session.scalars(
            select(Sample.rel_path)
            .where(Sample.dataset_id == dataset_id, Sample.split == "train")
            .order_by(Sample.sha256)
        ).all()
    return [str(p) for p in paths[:count]]


def _assert_approximate_file_report(
    service: Any, request: dict[str, Any], n: int
) -> dict[str, Any]:
    assert request["status"] == "completed", request
    assert request["plan"]["exact"] is False
    response = service.client.get(f"/v1/deletion-requests/{request['id']}/report")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    ReportBody.model_validate(report)  # the published schema holds the new sections
    assert report["request"]["target"]["n_samples"] == n
    lineage = report["lineage"]
    assert lineage["exact"] is False and lineage["status"] == "not_applicable"
    for part in ("forget", "retain", "test"):
        assert report["efficacy"][part]["after"] is not None, part
    attacks = report["membership_inference"]["attacks"]
    for attack in ("loss_threshold", "logistic_regression"):
        assert 0.0 <= attacks[attack]["after"]["auc"] <= 1.0
        assert attacks[attack]["after"]["n_members"] == n
    return report


@pytest.mark.parametrize("method", ["scrub", "salun", "pruning", "dummy_labels"])
def test_an_approximate_method_forgets_files_of_a_monolithic_model(
    sqlite_service, tiny_dataset: Path, method: str
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    names = _train_files(dataset["id"], 10)
    before = _checkpoints(model["id"], 1)[(0, 0)].key

    # A plumbing test on a tiny, noisy model: the retained-accuracy guard (tested on its own in
    # test_version_guards) is opened so a one-epoch run's noise cannot refuse the version.
    request = service.forget(
        {
            "model": "mono",
            "filenames": names,
            "method": method,
            "method_config": FAST[method],
            "options": {"max_retain_drop": 100},
        }
    )

    assert request["status"] == "completed", request
    assert request["method"] == method and request["result_version"] == 2
    after = _checkpoints(model["id"], 2)[(0, 0)]
    assert after.key != before and not after.reused
    forgetting = service.client.get(f"/v1/models/{model['id']}").json()["metrics"]["forgetting"]
    assert forgetting["target"] == "files" and forgetting["exact"] is False
    given = forgetting["method_metrics"]["0"]
    read = method != "pruning"  # pruning is zero-glance
    assert given["forget_samples"] == 10 and given["forget_samples_given"] == (10 if read else 0)
    report = _assert_approximate_file_report(service, request, 10)
    assert NO_REFERENCE_NOTE in report["notes"] and "reference_retrain" not in report["efficacy"]
    assert not any((tiny_dataset / name).exists() for name in names)


def test_auto_stays_exact_and_unsupported_pairs_are_refused(
    sqlite_service, tiny_dataset: Path
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    names = _train_files(dataset["id"], 3)

    for body in ({"method": "unsir"}, {"method": "adversarial"}):
        _problem(
            service.client.post(
                "/v1/deletion-requests", json={"model": "mono", "filenames": names, **body}
            ),
            422,
            body["method"],
            "cannot forget files",
            "['classes']",
        )
    queued = service.submit({"model": "mono", "filenames": names})
    assert queued["method"] == "sisa" and queued["plan"]["exact"] is True
    explicit = service.submit({"model": "mono", "filenames": names[:1], "method": "auto"})
    assert explicit["method"] == "sisa"

    listed = service.client.get("/v1/methods").json()
    assert "auto" in listed["choosing"]["files"] and "unsir" in listed["choosing"]["classes"]
    for method in listed["methods"]:
        assert isinstance(method["measured_file_forgetting"], list), method["name"]


def test_files_forgotten_from_an_imported_model(
    sqlite_service, tiny_dataset: Path, tmp_path: Path
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    trained = service.train_model(dataset["id"], name="elsewhere", **MONOLITHIC)
    blob = store().get(CHECKPOINTS, _checkpoints(trained["id"], 1)[(0, 0)].key)
    state = torch.load(io.BytesIO(blob), weights_only=True)["model"]
    path = _save(tmp_path / "weights.pt", {"state_dict": state})
    model = _import(
        service,
        {
            "name": "imported",
            "dataset": dataset["id"],
            "architecture": "small_cnn",
            "class_names": dataset["classes"],
            "state_dict_path": str(path),
            "image_size": 16,
            "seed": 3,
            "norm": "batch",  # trained here with the recommended recipe's batch norm
        },
    )
    assert model["status"] == "ready", model
    names = _train_files(dataset["id"], 6)

    request = service.forget(
        {"model": "imported", "filenames": names, "method": "scrub", "method_config": FAST["scrub"]}
    )

    _assert_approximate_file_report(service, request, 6)


def test_a_reference_retrain_reports_the_gap_to_it(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    names = _train_files(dataset["id"], 10)

    request = service.forget(
        {
            "model": "mono",
            "filenames": names,
            "method": "salun",
            "method_config": FAST["salun"],
            "options": {"reference": "retrain"},
        }
    )

    report = _assert_approximate_file_report(service, request, 10)
    assert NO_REFERENCE_NOTE not in report["notes"]
    gap = report["efficacy"]["reference_retrain"]
    assert gap["kind"] == "retrain" and gap["retrain_seconds"] > 0
    assert gap["method_seconds"] > 0 and gap["speedup_over_retrain"] > 0
    for name, metric in gap["metrics"].items():
        assert metric["retrain"] is not None, name
        assert metric["gap_points"] == pytest.approx(
            100 * abs(metric["after"] - metric["retrain"]), abs=1e-3
        )
    averaged = [gap["metrics"][k]["gap_points"] for k in gap["average_over"]]
    assert gap["average_gap_points"] == pytest.approx(sum(averaged) / 4, abs=1e-3)
    assert report["efficacy"]["forget"]["retrain"] is not None
    attacks = report["membership_inference"]["attacks"]
    assert attacks["loss_threshold"]["retrain"]["n_members"] == 10
    verdicts = " ".join(v["text"] for v in report["membership_inference"]["verdicts"])
    assert "retrained without the data gives" in verdicts


def test_reference_refusals(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    service.train_model(dataset["id"], name="sharded")
    names = _train_files(dataset["id"], 2)
    cases = [
        ("mono", "sisa", {"reference": "retrain"}, "exact already"),
        ("sharded", "scrub", {"reference": "retrain"}, "monolithic"),
        ("mono", "scrub", {"reference": "nearest"}, "options.reference"),
        ("mono", "scrub", {"colour": "blue"}, "options.colour"),
    ]
    for model, method, options, needle in cases:
        body = {"model": model, "filenames": names, "method": method, "options": options}
        _problem(service.client.post("/v1/deletion-requests", json=body), 422, needle)
    done = service.submit(
        {"model": "mono", "filenames": names, "method": "scrub", "options": {"reference": "none"}}
    )
    assert done["status"] in ("received", "queued")
    with session_scope() as session:
        stored = session.get(DeletionRequest, done["id"])
        assert stored is not None and stored.options is not None
        assert stored.options["reference"] == "none"
