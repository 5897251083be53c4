"""SISA deletion by file, run in-process on real PostgreSQL: what was retrained, from where,
what was reused byte for byte, and that the result equals a full retrain."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from app.db.models import Checkpoint, ManifestEntry, ModelVersion, Sample, Tombstone
from app.db.session import session_scope
from worker.constituents import CHECKPOINTS
from worker.flows.common import store


def _checkpoints(version_number: int, model_id: int) -> dict[tuple[int, int], Checkpoint]:
    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == version_number
            )
        )
        assert version is not None
        rows = session.scalars(select(Checkpoint).where(Checkpoint.version_id == version.id)).all()
        return {(c.shard, c.slice): c for c in rows}


def _manifest(model_id: int, number: int) -> dict[int, tuple[int, int]]:
    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        rows = session.execute(
            select(ManifestEntry.sample_id, ManifestEntry.shard, ManifestEntry.slice).where(
                ManifestEntry.version_id == version.id
            )
        ).all()
        return {sid: (shard, slice_) for sid, shard, slice_ in rows}


def _sample(sample_id: int) -> Sample:
    with session_scope() as session:
        sample = session.get(Sample, sample_id)
        assert sample is not None
        return sample


def test_file_deletion_retrains_only_affected_shards_from_the_right_slice(
    postgres_service, tiny_dataset: Path
) -> None:
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    manifest_v1 = _manifest(model["id"], 1)
    before = _checkpoints(1, model["id"])
    blobs_before = {slot: store().get(CHECKPOINTS, c.key) for slot, c in before.items()}

    # Pick one training file that sits in slice 1 (the last) of some shard.
    with session_scope() as session:
        rows = session.execute(
            select(Sample.id, Sample.rel_path).where(
                Sample.dataset_id == dataset["id"], Sample.split == "train"
            )
        ).all()
    victim_id, victim_path = next((sid, p) for sid, p in rows if manifest_v1[sid][1] == 1)
    shard, slice_ = manifest_v1[victim_id]
    name = victim_path.removeprefix("train/")

    request = service.forget({"model": model["id"], "filenames": [name], "external_id": "s-1"})

    assert request["status"] == "completed", request
    assert request["result_version"] == 2
    plan = request["plan"]
    assert plan["affected_shards"] == [{"shard": shard, "restart_slice": 1, "deleted_samples": 1}]
    assert shard not in plan["untouched_shards"] and len(plan["untouched_shards"]) == 2

    after = _checkpoints(2, model["id"])
    for (s, r), checkpoint in after.items():
        if s == shard and r >= slice_:
            assert not checkpoint.reused
            assert checkpoint.key != before[(s, r)].key
        else:
            assert checkpoint.reused, (s, r)
            assert checkpoint.key == before[(s, r)].key
            # Reused checkpoints are the very same bytes, not a retrain that happens to match.
            assert store().get(CHECKPOINTS, checkpoint.key) == blobs_before[(s, r)]
            assert checkpoint.artifact_sha256 == before[(s, r)].artifact_sha256

    manifest_v2 = _manifest(model["id"], 2)
    assert victim_id not in manifest_v2
    assert len(manifest_v2) == len(manifest_v1) - 1

    # The file is gone from storage, tombstoned, and the superseded checkpoint purged.
    assert not (tiny_dataset / victim_path).exists()
    victim = _sample(victim_id)
    assert victim.state == "deleted"
    # Its names are gone from the database; its hash, class and split stay.
    assert victim.rel_path is None and victim.file_name is None
    assert victim.split == "train" and len(victim.sha256) == 64
    with session_scope() as session:
        assert session.get(Tombstone, victim.sha256) is not None
    assert not store().exists(CHECKPOINTS, before[(shard, 1)].key)
    assert store().exists(CHECKPOINTS, before[(shard, 0)].key)

    # Asking again for the same file is refused and names it: the service no longer knows
    # the name at all.
    response = service.client.post(
        "/v1/deletion-requests", json={"model": model["id"], "filenames": [name]}
    )
    assert response.status_code == 422
    assert response.json()["invalid_filenames"]["unknown"] == [name]


def test_sisa_result_equals_a_full_retrain_on_the_same_data_and_seed(
    sqlite_service, tiny_dataset: Path
) -> None:
    """Exactness, measured: the SISA-unlearned constituent is bit-identical to retraining that
    constituent from scratch without the sample (CPU, deterministic training)."""
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    manifest_v1 = _manifest(model["id"], 1)
    with session_scope() as session:
        rows = session.execute(
            select(Sample.id, Sample.rel_path).where(
                Sample.dataset_id == dataset["id"], Sample.split == "train"
            )
        ).all()
    victim_id, victim_path = next((sid, p) for sid, p in rows if manifest_v1[sid][1] == 1)
    shard = manifest_v1[victim_id][0]

    sisa = service.forget({"model": model["id"], "filenames": [victim_path], "method": "sisa"})
    assert sisa["status"] == "completed"
    sisa_ckpt = _checkpoints(2, model["id"])

    # A second deletion with method=retrain trains every shard from scratch on v2's data
    # minus one more sample; compare the shards it did not touch against v2.
    _other_id, other_path = next(
        (sid, p) for sid, p in rows if manifest_v1[sid][0] != shard and sid != victim_id
    )
    retrain = service.forget({"model": model["id"], "filenames": [other_path], "method": "retrain"})
    assert retrain["status"] == "completed"
    assert retrain["plan"]["full_retrain"] is True
    assert len(retrain["plan"]["affected_shards"]) == 3
    retrained = _checkpoints(3, model["id"])
    assert not any(c.reused for c in retrained.values())
    final = TINY_SLICES - 1
    sisa_final = sisa_ckpt[(shard, final)]
    retrain_final = retrained[(shard, final)]
    # Different keys (the retrain is salted so it never reuses), identical weights.
    assert sisa_final.key != retrain_final.key
    sisa_state = torch.load(_blob(sisa_final.key), weights_only=True)["model"]
    retrain_state = torch.load(_blob(retrain_final.key), weights_only=True)["model"]
    for name, tensor in sisa_state.items():
        assert torch.equal(tensor, retrain_state[name]), name


TINY_SLICES = 2


def _blob(key: str):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(store().get(CHECKPOINTS, key))


class _WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the task sees it."""


def _victim(service, dataset_id: int, model_id: int) -> str:  # type: ignore[no-untyped-def]
    manifest = _manifest(model_id, 1)
    with session_scope() as session:
        rows = session.execute(
            select(Sample.id, Sample.rel_path).where(
                Sample.dataset_id == dataset_id, Sample.split == "train"
            )
        ).all()
    return next(path for sid, path in rows if sid in manifest)


def test_a_worker_killed_while_auditing_is_resumed_by_the_sweep(
    sqlite_service, tiny_dataset: Path, monkeypatch
) -> None:
    """The new version is built but the worker died mid-audit: the sweep finishes the batch
    (report, version made current, erasure, lock) instead of leaving it stuck in `verifying`."""
    from app.db.models import Model
    from worker import tasks

    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    victim = _victim(service, dataset["id"], model["id"])

    def killed(*_: object) -> None:
        raise _WorkerKilled

    monkeypatch.setattr(tasks, "_audit_hook", lambda: killed)
    request = service.submit({"model": model["id"], "filenames": [victim]})
    with pytest.raises(_WorkerKilled):
        service.run_worker(model["id"])
    stuck = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert stuck["status"] == "verifying", stuck
    assert (tiny_dataset / victim).exists()
    # Not current yet: a version becomes current with the erasure, after its proof and audit.
    assert service.client.get(f"/v1/models/{model['id']}").json()["current_version"] == 1

    monkeypatch.undo()
    assert tasks.sweep()["complete_versions"] == 0  # the batch is still fresh: maybe alive
    with session_scope() as session:
        session.get(Model, model["id"]).heartbeat_at = None  # type: ignore[union-attr]
    assert tasks.sweep()["complete_versions"] == 1

    done = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert done["status"] == "completed", done
    assert done["result_version"] == 2
    assert not (tiny_dataset / victim).exists()
    assert service.client.get(f"/v1/deletion-requests/{request['id']}/report").status_code == 200
    with session_scope() as session:
        assert session.get(Model, model["id"]).active_batch is None  # type: ignore[union-attr]


def test_a_failed_audit_fails_the_request_and_keeps_the_parent_current(
    sqlite_service, tiny_dataset: Path, monkeypatch
) -> None:
    from worker import tasks

    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    victim = _victim(service, dataset["id"], model["id"])

    def broken(*_: object) -> None:
        raise RuntimeError("attack features were all NaN")

    monkeypatch.setattr(tasks, "_audit_hook", lambda: broken)
    request = service.forget({"model": model["id"], "filenames": [victim]})
    assert request["status"] == "failed", request
    assert "audit or erasure failed" in request["status_reason"]
    after = service.client.get(f"/v1/models/{model['id']}").json()
    assert after["status"] == "ready", after
    # No report, no erasure: the version built for it is never served.
    assert after["current_version"] == 1, after
    assert next(v for v in after["versions"] if v["number"] == 2)["status"] == "failed"
    # Not erased without a report: the file stays, and a new request may still name it.
    assert (tiny_dataset / victim).exists()
    retry = service.client.post(
        "/v1/deletion-requests", json={"model": model["id"], "filenames": [victim]}
    )
    assert retry.status_code == 202, retry.text
