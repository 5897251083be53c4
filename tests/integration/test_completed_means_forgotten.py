"""A request ends `completed` only when the data is gone: every identical copy of a named
image is forgotten, the lineage proof holds, and the new version passes its guard rails.
Run in-process on real PostgreSQL and Redis."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.models import Sample, Tombstone
from app.db.session import session_scope


def _add_twin(dataset: Path, rel_path: str, twin_name: str) -> Path:
    """A second file with the very same bytes, beside the first."""
    source = dataset / rel_path
    twin = source.with_name(twin_name)
    shutil.copyfile(source, twin)
    return twin


def _first_train_file(dataset: Path) -> str:
    return str(sorted((dataset / "train" / "bear").iterdir())[0].relative_to(dataset))


def _samples_with_hash(sha256: str) -> list[Sample]:
    with session_scope() as session:
        return list(session.scalars(select(Sample).where(Sample.sha256 == sha256)).all())


def test_registration_counts_identical_copies(postgres_service, tiny_dataset: Path) -> None:
    original = _first_train_file(tiny_dataset)
    _add_twin(tiny_dataset, original, "twin-a.png")
    _add_twin(tiny_dataset, original, "twin-b.png")
    other = str(sorted((tiny_dataset / "train" / "zebra").iterdir())[0].relative_to(tiny_dataset))
    _add_twin(tiny_dataset, other, "twin-c.png")

    dataset = postgres_service.register_dataset(tiny_dataset)

    # Three files of one image and two of another: two groups, three copies beyond the first.
    assert dataset["duplicate_content"] == {"groups": 2, "extra_copies": 3}
    again = postgres_service.client.get(f"/v1/datasets/{dataset['id']}").json()
    assert again["duplicate_content"] == {"groups": 2, "extra_copies": 3}


def test_deleting_one_copy_forgets_every_identical_copy(
    postgres_service, tiny_dataset: Path
) -> None:
    service = postgres_service
    original = _first_train_file(tiny_dataset)
    twin = _add_twin(tiny_dataset, original, "twin.png")
    sha = hashlib.sha256(twin.read_bytes()).hexdigest()
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])

    request = service.forget({"model": model["id"], "filenames": [original]})

    assert request["status"] == "completed", request
    assert request["plan"]["identical_copies"] == [{"sha256": sha, "extra_copies": 1}]
    assert request["target"]["samples"] == 2
    assert "twin.png" not in str(request["plan"])  # hashes and counts, never names
    assert not (tiny_dataset / original).exists()
    assert not twin.exists()
    copies = _samples_with_hash(sha)
    assert len(copies) == 2 and {s.state for s in copies} == {"deleted"}
    assert all(s.rel_path is None for s in copies)
    with session_scope() as session:
        assert session.get(Tombstone, sha) is not None
    report = service.client.get(f"/v1/deletion-requests/{request['id']}/report").json()
    lineage = report["report"]["lineage"]
    assert lineage["verified"] is True, lineage


def _model(service, model_id: int) -> dict:  # type: ignore[no-untyped-def]
    return service.client.get(f"/v1/models/{model_id}").json()


def _version_status(model: dict, number: int) -> str:
    return next(v["status"] for v in model["versions"] if v["number"] == number)


def test_a_version_whose_lineage_fails_is_not_made_current_and_nothing_is_erased(
    postgres_service, tiny_dataset: Path, monkeypatch
) -> None:
    """A layout step that forgets to drop the deleted samples (here: it is handed none) builds
    a version whose manifest still holds the deleted hash. The proof, recomputed from that
    manifest, catches it: the request fails, the parent stays current, the file stays."""
    from worker.flows import deletion

    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    victim = _first_train_file(tiny_dataset)
    sha = hashlib.sha256((tiny_dataset / victim).read_bytes()).hexdigest()
    monkeypatch.setattr(deletion, "batch_sample_ids", lambda *_: [])

    request = service.forget({"model": model["id"], "filenames": [victim]})

    assert request["status"] == "failed", request
    reason = request["status_reason"]
    assert "lineage" in reason and sha in reason, reason
    assert "bear" not in reason and Path(victim).name not in reason  # hashes, never names
    assert (tiny_dataset / victim).exists()
    (sample,) = _samples_with_hash(sha)
    assert sample.state == "active" and sample.rel_path == victim
    after = _model(service, model["id"])
    assert after["current_version"] == 1, after
    assert _version_status(after, 2) == "failed"
    with session_scope() as session:
        assert session.get(Tombstone, sha) is None
    # Nothing was lost: the file can be asked for again once the fault is fixed.
    monkeypatch.undo()
    retry = service.forget({"model": model["id"], "filenames": [victim]})
    assert retry["status"] == "completed", retry
    assert not (tiny_dataset / victim).exists()
    assert _model(service, model["id"])["current_version"] == 3


class _WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the task sees it."""


def test_a_worker_killed_between_making_current_and_unlinking_is_resumed(
    postgres_service, tiny_dataset: Path, monkeypatch
) -> None:
    """The version is made current in the transaction that records the intent to erase, so a
    worker killed right after it leaves a proven current version and samples marked erasing;
    the sweep finishes the erasure and completes the request."""
    from app.db.models import Model
    from worker import tasks
    from worker.flows import deletion

    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    victim = _first_train_file(tiny_dataset)
    sha = hashlib.sha256((tiny_dataset / victim).read_bytes()).hexdigest()

    def killed(*_: object) -> None:
        raise _WorkerKilled

    monkeypatch.setattr(deletion, "unlink_files", killed)
    request = service.submit({"model": model["id"], "filenames": [victim]})
    with pytest.raises(_WorkerKilled):
        service.run_worker(model["id"])
    (sample,) = _samples_with_hash(sha)
    assert sample.state == "erasing"
    assert _model(service, model["id"])["current_version"] == 2
    assert (tiny_dataset / victim).exists()

    monkeypatch.undo()
    with session_scope() as session:
        session.get(Model, model["id"]).heartbeat_at = None  # type: ignore[union-attr]
    assert tasks.sweep()["complete_versions"] == 1
    done = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert done["status"] == "completed", done
    assert not (tiny_dataset / victim).exists()
    (sample,) = _samples_with_hash(sha)
    assert sample.state == "deleted"
