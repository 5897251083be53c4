"""Guard rails on a new version, in-process on real PostgreSQL and Redis: a version with
non-finite weights, or one whose retained-class accuracy fell more than the request's
``max_retain_drop`` below its parent's, is never made current and nothing is erased."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from app.db.models import Sample
from app.db.session import session_scope

MONOLITHIC = {"shards": 1, "slices": 1, "epochs_per_slice": 8}
FINETUNE = {"epochs": 1, "batch_size": 32}
PROBLEM = "application/problem+json"


def _model(service, model_id: int) -> dict:  # type: ignore[no-untyped-def]
    return service.client.get(f"/v1/models/{model_id}").json()


def _version(model: dict, number: int) -> dict:
    return next(v for v in model["versions"] if v["number"] == number)


def _active_elephants(dataset_id: int) -> int:
    with session_scope() as session:
        return len(
            session.scalars(
                select(Sample.id).where(
                    Sample.dataset_id == dataset_id,
                    Sample.class_index == 1,  # elephant
                    Sample.state == "active",
                )
            ).all()
        )


def _diverging_finetune(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine-tuning that diverges: the real method runs, then its first layer overflows to
    infinity, as an unbounded learning rate does. Everything after it (checkpoint, records,
    finalizer, guard) is the service's own code path."""
    from worker.unlearning import registry

    real = registry.get_method("finetune").run
    assert real is not None

    def diverged(inputs: Any, config: Any) -> Any:
        result = real(inputs, config)
        with torch.no_grad():
            next(iter(inputs.model.parameters())).mul_(float("inf"))
        return result

    monkeypatch.setitem(registry._RUNNERS, "finetune", diverged)


def test_a_version_with_non_finite_weights_is_never_made_current(
    postgres_service, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    _diverging_finetune(monkeypatch)

    request = service.forget(
        {
            "model": model["id"],
            "class_name": "elephant",
            "method": "finetune",
            "method_config": FINETUNE,
        }
    )

    assert request["status"] == "failed", request
    assert "non-finite weights" in request["status_reason"], request["status_reason"]
    assert "shard 0" in request["status_reason"]
    after = _model(service, model["id"])
    assert after["current_version"] == 1 and after["status"] == "ready", after
    assert _version(after, 2)["status"] == "failed"
    assert _active_elephants(dataset["id"]) == 48 + 16  # not one file erased
    assert (tiny_dataset / "train" / "elephant").is_dir()
    assert len(list((tiny_dataset / "train" / "elephant").iterdir())) == 48


def test_a_version_that_loses_retained_accuracy_is_refused_with_its_figures(
    postgres_service, tiny_dataset: Path
) -> None:
    """A learning rate that wrecks the model (finite weights, retained classes near chance):
    refused under the default 10-point allowance; accepted when the request allows it."""
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    wrecking = {**FINETUNE, "lr": 1.0}

    refused = service.forget(
        {
            "model": model["id"],
            "class_name": "elephant",
            "method": "finetune",
            "method_config": wrecking,
        }
    )

    assert refused["status"] == "failed", refused
    assert refused["options"]["max_retain_drop"] == 10.0
    reason = refused["status_reason"]
    assert "test accuracy on the retained classes fell" in reason, reason
    assert "(version 1)" in reason and "more than max_retain_drop 10" in reason
    after = _model(service, model["id"])
    assert after["current_version"] == 1 and after["retired_classes"] == []
    assert _version(after, 2)["status"] == "failed"
    assert _active_elephants(dataset["id"]) == 48 + 16

    accepted = service.forget(
        {
            "model": model["id"],
            "class_name": "elephant",
            "method": "finetune",
            "method_config": wrecking,
            "options": {"max_retain_drop": 100},
        }
    )
    assert accepted["status"] == "completed", accepted
    assert accepted["options"]["max_retain_drop"] == 100.0
    assert _model(service, model["id"])["current_version"] == 3
    assert _active_elephants(dataset["id"]) == 0


def test_request_options_are_typed_bounded_and_shown(postgres_service, tiny_dataset: Path) -> None:
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], name="mono", **MONOLITHIC)
    victim = sorted((tiny_dataset / "train" / "bear").iterdir())[0].name
    for options, field in (
        ({"max_retain_drop": 101}, "max_retain_drop"),
        ({"max_retain_drop": -1}, "max_retain_drop"),
        ({"max_retain_drop": "lots"}, "max_retain_drop"),
        ({"no_such_option": 1}, "no_such_option"),
    ):
        response = service.client.post(
            "/v1/deletion-requests",
            json={"model": model["id"], "filenames": [victim], "options": options},
        )
        assert response.status_code == 422, (options, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert field in response.text
    request = service.submit(
        {"model": model["id"], "filenames": [victim], "options": {"max_retain_drop": 2.5}}
    )
    shown = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert shown["options"]["max_retain_drop"] == 2.5
