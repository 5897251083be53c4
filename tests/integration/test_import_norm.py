"""Importing weights whose normalisation layers differ from the ones the import asked for.

New models default to batch norm, but an import left without ``norm`` keeps the architecture's
original layers (none for small_cnn): the weights were trained elsewhere. Batch-norm weights
imported that way must be refused with a reason that names the field and the value that fits.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from app.db.models import ModelVersion
from app.db.session import session_scope
from worker.training.architectures import build_model


def _import(service: Any, body: dict[str, Any]) -> dict[str, Any]:
    from worker import tasks

    response = service.client.post("/v1/models/import", json=body)
    assert response.status_code == 202, response.text
    model = response.json()
    with session_scope() as session:
        version_id = session.scalar(
            select(ModelVersion.id).where(ModelVersion.model_id == model["id"])
        )
    assert version_id is not None
    tasks.import_model(version_id)  # the API enqueued it; run it inline
    return service.client.get(f"/v1/models/{model['id']}").json()


def _batch_norm_weights(path: Path, classes: int) -> Path:
    torch.manual_seed(0)
    net = build_model("small_cnn", num_classes=classes, in_channels=1, image_size=16, norm="batch")
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    path.write_bytes(buffer.getvalue())
    return path


def test_batch_norm_weights_imported_without_norm_are_refused_naming_the_field(
    sqlite_service, tiny_dataset: Path, tmp_path: Path
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    weights = _batch_norm_weights(tmp_path / "bn.pt", len(dataset["classes"]))
    body = {
        "name": "bn-without-norm",
        "dataset": dataset["id"],
        "architecture": "small_cnn",
        "class_names": dataset["classes"],
        "state_dict_path": str(weights),
        "image_size": 16,
    }

    refused = _import(service, body)

    assert refused["status"] == "failed", refused
    reason = refused["status_reason"]
    assert "norm 'none'" in reason and '"norm": "batch"' in reason, reason
    assert "norm" not in refused["config"]["recipe"]  # recorded as asked: original layers

    # An unknown value is a 422 naming the field, before anything is stored.
    wrong = service.client.post(
        "/v1/models/import", json={**body, "name": "typo", "norm": "batchnorm"}
    )
    assert wrong.status_code == 422, wrong.text
    assert [e["field"] for e in wrong.json()["errors"]] == ["body.norm"], wrong.json()

    # With the field named, the same weights import and evaluate.
    imported = _import(service, {**body, "name": "bn-with-norm", "norm": "batch"})
    assert imported["status"] == "ready", imported
    assert imported["config"]["recipe"]["norm"] == "batch"
