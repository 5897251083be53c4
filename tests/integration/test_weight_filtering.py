"""Weight filtering over HTTP: train a model's per-class filters as a job, forget one class and
then a second by applying them, and check that what still encodes a forgotten class (the
unfiltered weights, the filter rows) is purged; a killed filter job is taken up again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.core.store_namespaces import CHECKPOINTS, WEIGHT_FILTERS
from app.db.filters import FilterStatus, WeightFilterJob
from app.db.models import Checkpoint, ModelVersion
from app.db.session import session_scope
from tests.conftest import make_subset
from worker import tasks
from worker.flows import filters as filter_flow
from worker.flows.common import store
from worker.flows.filter_store import filter_key
from worker.flows.sweep import find_stalled_work

PROBLEM = "application/problem+json"
CLASSES = ("bear", "cow", "elephant", "zebra")
MONOLITHIC = {"shards": 1, "slices": 1, "epochs_per_slice": 8}
# Enough steps for the tiny model's filters to separate its four classes, and the stronger
# unlearning weight this easy task tolerates.
FILTERS = {
    "epochs": 20,
    "min_steps": 0,
    "batch_size": 16,
    "lr": 0.05,
    "lambda_unlearn": 1.0,
    "lambda_reg": 1.0,
}
# The method's plumbing and figures are checked here, not the request's targets.
LAX = {"max_forget_accuracy": 1.0, "max_retain_drop": 100, "max_class_retain_drop": 100}


def _final_key(model_id: int, number: int) -> str:
    with session_scope() as session:
        key = session.scalar(
            select(Checkpoint.key)
            .join(ModelVersion, ModelVersion.id == Checkpoint.version_id)
            .where(ModelVersion.model_id == model_id, ModelVersion.number == number)
        )
    assert key is not None
    return key


def _train_filters(service: Any, model_id: int) -> dict[str, Any]:
    response = service.client.post(f"/v1/models/{model_id}/filters", json={"config": FILTERS})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/models/{model_id}/filters"
    job = response.json()
    assert job["status"] == "queued" and job["classes"] == list(CLASSES)
    tasks.train_filters(job["id"])  # what the worker runs for the message just sent
    return service.client.get(f"/v1/models/{model_id}/filters").json()


def _forget(service: Any, model_id: int, name: str) -> dict[str, Any]:
    request = service.forget(
        {"model": model_id, "class_name": name, "method": "weight_filtering", "options": LAX}
    )
    assert request["status"] == "completed", request
    return service.client.get(f"/v1/models/{model_id}").json()["metrics"]["forgetting"]


def test_filters_forget_two_classes_in_sequence_and_what_saw_them_is_purged(
    postgres_service, tmp_path: Path
) -> None:
    service = postgres_service
    root = make_subset(tmp_path / "animals", classes=CLASSES)
    dataset = service.register_dataset(root)
    model = service.train_model(dataset["id"], name="wf", **MONOLITHIC)
    model_id = model["id"]

    refused = service.client.post(
        "/v1/deletion-requests",
        json={"model": model_id, "class_name": "elephant", "method": "weight_filtering"},
    )
    assert refused.status_code == 422 and refused.headers["content-type"].startswith(PROBLEM)
    assert "has none" in refused.json()["detail"]
    assert f"/v1/models/{model_id}/filters" in refused.json()["detail"]
    assert service.client.get(f"/v1/models/{model_id}/filters").status_code == 404

    shown = _train_filters(service, model_id)
    assert shown["status"] == "ready", shown
    assert shown["progress"]["percent"] == 100.0 and shown["train_seconds"] > 0
    assert shown["trained_on_version"] == shown["applies_to_version"] == 1
    table = shown["accuracy"]["classes"]
    assert shown["accuracy"]["split"] == "validation" and set(table) == set(CLASSES)
    for row in table.values():
        assert row["n_forget"] > 0 and row["n_retained"] > 0
        assert row["forget_accuracy"] < row["forget_accuracy_unfiltered"]
    v1_key = _final_key(model_id, 1)
    assert store().exists(WEIGHT_FILTERS, filter_key(shown["id"], v1_key))

    first = _forget(service, model_id, "elephant")
    assert first["method"] == "weight_filtering"
    assert first["forget"]["after"] < first["forget"]["before"]
    assert first["forget"]["after"] <= 0.25
    v2_key = _final_key(model_id, 2)
    # The unfiltered weights and the filters holding elephant's row are gone; the rest of
    # the rows now apply to version 2.
    assert not store().exists(CHECKPOINTS, v1_key)
    assert not store().exists(WEIGHT_FILTERS, filter_key(shown["id"], v1_key))
    assert store().exists(WEIGHT_FILTERS, filter_key(shown["id"], v2_key))
    after_first = service.client.get(f"/v1/models/{model_id}/filters").json()
    assert after_first["applies_to_version"] == 2
    assert after_first["classes"] == ["bear", "cow", "zebra"]

    second = _forget(service, model_id, "zebra")
    assert second["forget"]["after"] < second["forget"]["before"]
    assert second["forget"]["after"] <= 0.25
    # Composed on version 2's weights: only zebra's row was applied this time.
    assert second["method_metrics"]["0"]["details"]["classes_filtered"] == [3]
    assert not store().exists(CHECKPOINTS, v2_key)
    assert not store().exists(WEIGHT_FILTERS, filter_key(shown["id"], v2_key))
    after_second = service.client.get(f"/v1/models/{model_id}/filters").json()
    assert after_second["applies_to_version"] == 3 and after_second["classes"] == ["bear", "cow"]

    again = service.client.post(
        "/v1/deletion-requests",
        json={"model": model_id, "class_name": "elephant", "method": "weight_filtering"},
    )
    assert again.status_code == 409

    # Another method makes a version the filters do not match: they are purged.
    other = service.forget(
        {
            "model": model_id,
            "filenames": ["bear/" + sorted((root / "train" / "bear").iterdir())[0].name],
        }
    )
    assert other["status"] == "completed", other
    purged = service.client.get(f"/v1/models/{model_id}/filters").json()
    assert purged["status"] == "purged" and "replaced the weights" in purged["status_reason"]
    assert not store().exists(WEIGHT_FILTERS, filter_key(shown["id"], _final_key(model_id, 3)))
    refused = service.client.post(
        "/v1/deletion-requests",
        json={"model": model_id, "class_name": "cow", "method": "weight_filtering"},
    )
    assert refused.status_code == 422 and "purged" in refused.json()["detail"]


def test_a_killed_filter_job_is_taken_up_again_then_failed_after_three_runs(
    sqlite_service, tmp_path: Path
) -> None:
    service = sqlite_service
    root = make_subset(tmp_path / "animals", classes=CLASSES[:3], train_per_class=16)
    dataset = service.register_dataset(root)
    model = service.train_model(dataset["id"], name="wf", **{**MONOLITHIC, "epochs_per_slice": 1})
    # a few steps will do: this test is about the job, not the filters
    posted = service.client.post(
        f"/v1/models/{model['id']}/filters", json={"config": {"min_steps": 0}}
    )
    assert posted.status_code == 202
    job_id = posted.json()["id"]
    busy = service.client.post(f"/v1/models/{model['id']}/filters", json={})
    assert busy.status_code == 409 and "already has weight filters" in busy.json()["detail"]

    # A worker takes the job and dies: its heartbeat stops.
    assert filter_flow.claim_job(job_id) is not None
    assert filter_flow.claim_job(job_id) is None  # a duplicate message finds it taken
    _age(job_id)
    actions = find_stalled_work()
    assert actions.filter_jobs == [job_id]
    assert _job(job_id).status == FilterStatus.QUEUED
    tasks.train_filters(job_id)
    assert service.client.get(f"/v1/models/{model['id']}/filters").json()["status"] == "ready"

    # A job whose worker keeps dying ends failed, with nothing left behind.
    job_id = service.client.post(f"/v1/models/{model['id']}/filters", json={}).json()["id"]
    for _ in range(filter_flow.MAX_ATTEMPTS):
        assert filter_flow.claim_job(job_id) is not None
        _age(job_id)
        find_stalled_work()
    job = _job(job_id)
    assert job.status == FilterStatus.FAILED and "stopped 3 times" in (job.status_reason or "")


def _job(job_id: int) -> WeightFilterJob:
    with session_scope() as session:
        job = session.get(WeightFilterJob, job_id)
        assert job is not None
        session.expunge(job)
    return job


def _age(job_id: int) -> None:
    with session_scope() as session:
        job = session.get(WeightFilterJob, job_id)
        assert job is not None
        job.heartbeat_at = datetime.now(UTC) - timedelta(hours=1)


def test_a_bad_filter_configuration_is_refused_by_name_and_starts_no_job(
    sqlite_service, tmp_path: Path
) -> None:
    service = sqlite_service
    root = make_subset(tmp_path / "animals", classes=CLASSES[:3], train_per_class=16)
    dataset = service.register_dataset(root)
    model = service.train_model(dataset["id"], name="wf", **{**MONOLITHIC, "epochs_per_slice": 1})
    url = f"/v1/models/{model['id']}/filters"
    for field, value in (("min_steps", -1), ("min_steps", 1e308), ("lr_schedule", "weekly")):
        refused = service.client.post(url, json={"config": {field: value}})
        assert refused.status_code == 422, (field, value, refused.text)
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert field in refused.text, refused.text
    assert service.client.get(url).status_code == 404  # no job was stored
