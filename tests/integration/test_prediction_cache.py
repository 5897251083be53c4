"""Constituents' cached test predictions: a deletion evaluates only what it retrained, the cache
never outlives its checkpoint or the test samples it was made on, and cached results are the
same as computing them again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from app.db.models import Checkpoint, Model, ModelVersion, Sample, SampleState
from app.db.session import session_scope
from app.repositories.samples import active_test_ids
from tests.conftest import TINY_MODEL
from worker import predictions
from worker.constituents import CHECKPOINTS, final_checkpoints
from worker.flows.common import store
from worker.flows.training import evaluate_version
from worker.predictions import PREDICTIONS, load_cached, split_digest
from worker.samples import sample_rows


def _version_metrics(service: Any, model_id: int, number: int) -> dict[str, Any]:
    model = service.client.get(f"/v1/models/{model_id}").json()
    return next(v for v in model["versions"] if v["number"] == number)["metrics"]


def _first_file(dataset_id: int, split: str) -> str:
    with session_scope() as session:
        rel_path = session.scalars(
            select(Sample.rel_path)
            .where(
                Sample.dataset_id == dataset_id,
                Sample.split == split,
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.id)
        ).first()
    assert rel_path is not None
    return str(rel_path)


def _evaluated_test_file(dataset_id: int) -> str:
    """A test file the evaluation scores (not one held out as the validation split)."""
    with session_scope() as session:
        sample = session.get(Sample, active_test_ids(session, dataset_id)[0])
        assert sample is not None
        return str(sample.rel_path)


def _final_keys(model_id: int, number: int) -> dict[int, Checkpoint]:
    with session_scope() as session:
        model = session.get(Model, model_id)
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        assert model is not None and version is not None
        checkpoints = final_checkpoints(session, version, model.recipe.slices)
        for checkpoint in checkpoints:
            session.expunge(checkpoint)
        return {c.shard: c for c in checkpoints}


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts constituent runs on the test split (the real inference still runs)."""
    calls: list[int] = []
    real = predictions.predict_proba

    def counted(net: torch.nn.Module, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append(int(images.shape[0]))
        return real(net, images, **kwargs)

    monkeypatch.setattr(predictions, "predict_proba", counted)
    return calls


def _evaluate_now(model_id: int, number: int) -> dict[str, Any]:
    with session_scope() as session:
        model = session.get(Model, model_id)
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        assert model is not None and version is not None
        return evaluate_version(session, model, version)


def test_a_deletion_evaluates_only_retrained_constituents_and_purges_their_cache(
    postgres_service, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    first = _version_metrics(service, model["id"], 1)
    assert first["evaluation"]["constituents_evaluated"] == [0, 1, 2]
    v1 = _final_keys(model["id"], 1)
    assert all(store().exists(PREDICTIONS, c.key) for c in v1.values())

    calls = _count_evaluations(monkeypatch)
    done = service.forget(
        {"model": model["id"], "filenames": [_first_file(dataset["id"], "train")]}
    )
    assert done["status"] == "completed", done
    retrained = sorted(a["shard"] for a in done["plan"]["affected_shards"])
    assert len(retrained) == 1
    evaluation = _version_metrics(service, model["id"], 2)["evaluation"]
    assert evaluation["constituents_evaluated"] == retrained
    assert evaluation["constituents_from_cache"] == [s for s in (0, 1, 2) if s not in retrained]
    test_size = evaluation["test_samples"]
    assert calls.count(test_size) == 1  # one constituent run on the test split, not three

    # The superseded constituent's checkpoint and its predictions are gone together; the kept
    # ones and the new one keep theirs.
    v2 = _final_keys(model["id"], 2)
    (shard,) = retrained
    assert v1[shard].key != v2[shard].key
    assert not store().exists(CHECKPOINTS, v1[shard].key)
    assert not store().exists(PREDICTIONS, v1[shard].key)
    for checkpoint in v2.values():
        assert store().exists(PREDICTIONS, checkpoint.key)


def test_cached_evaluation_equals_a_fresh_one(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    done = service.forget(
        {"model": model["id"], "filenames": [_first_file(dataset["id"], "train")]}
    )
    assert done["status"] == "completed", done
    cached = _evaluate_now(model["id"], 2)
    assert cached["evaluation"]["constituents_evaluated"] == []
    keys = _final_keys(model["id"], 2)
    with session_scope() as session:
        rows = sample_rows(session, active_test_ids(session, dataset["id"]))
        digest = split_digest(rows, TINY_MODEL["image_size"])  # type: ignore[arg-type]
    kept = {s: load_cached(store(), c, digest) for s, c in keys.items()}
    for checkpoint in keys.values():
        store().delete(PREDICTIONS, checkpoint.key)
    fresh = _evaluate_now(model["id"], 2)
    assert fresh["evaluation"]["constituents_evaluated"] == [0, 1, 2]
    for name in ("test", "constituents", "test_retained_classes"):
        assert cached[name] == fresh[name]
    for shard, checkpoint in keys.items():
        again = load_cached(store(), checkpoint, digest)
        assert again is not None and kept[shard] is not None
        assert torch.equal(again, kept[shard])


def test_erasing_a_test_file_invalidates_every_cached_prediction(
    sqlite_service, tiny_dataset: Path
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    before = _version_metrics(service, model["id"], 1)["evaluation"]["test_samples"]
    v1 = _final_keys(model["id"], 1)
    blobs = {c.key: store().get(PREDICTIONS, c.key) for c in v1.values()}
    gone = service.forget(
        {"model": model["id"], "filenames": [_evaluated_test_file(dataset["id"])]}
    )
    assert gone["status"] == "completed", gone
    # Derived from the erased image: no cached prediction of the dataset is left.
    assert not any(store().exists(PREDICTIONS, c.key) for c in v1.values())
    # Even a blob made on the old test split that survived (restored here) is never used.
    for key, blob in blobs.items():
        store().put(PREDICTIONS, key, blob)

    done = service.forget(
        {"model": model["id"], "filenames": [_first_file(dataset["id"], "train")]}
    )
    assert done["status"] == "completed", done
    metrics = _version_metrics(service, model["id"], 3)
    assert metrics["evaluation"]["test_samples"] == before - 1
    assert metrics["evaluation"]["constituents_evaluated"] == [0, 1, 2]


def test_a_stale_blob_is_refused(sqlite_service, tiny_dataset: Path) -> None:
    """A blob made on other test samples, or from other bytes under the same key, is a miss."""
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    checkpoint = _final_keys(model["id"], 1)[0]
    proba = torch.full((4, 3), 1 / 3)
    predictions.save_cached(store(), checkpoint, "a" * 64, proba)
    found = load_cached(store(), checkpoint, "a" * 64)
    assert found is not None and torch.equal(found, proba)
    assert load_cached(store(), checkpoint, "b" * 64) is None
    checkpoint.artifact_sha256 = "c" * 64
    assert load_cached(store(), checkpoint, "a" * 64) is None
