"""Forgetting is about content and people, not one path or one model: a class's images copied
under another class, a file shared by two models of one dataset, and the weights of a version
that was refused. Run in-process (the real API, the worker's tasks inline)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from sqlalchemy import select

from app.db.models import Checkpoint, ManifestEntry, Model, ModelVersion, Sample
from app.db.session import session_scope
from worker.constituents import CHECKPOINTS
from worker.flows.common import store


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _samples_with_hash(sha256: str) -> list[Sample]:
    with session_scope() as session:
        return list(session.scalars(select(Sample).where(Sample.sha256 == sha256)).all())


def _current_manifest(model_id: int) -> set[int]:
    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None
        return set(
            session.scalars(
                select(ManifestEntry.sample_id).where(
                    ManifestEntry.version_id == model.current_version_id
                )
            ).all()
        )


def test_a_class_target_forgets_its_images_copied_under_another_class(
    sqlite_service, tiny_dataset: Path
) -> None:
    service = sqlite_service
    elephant = sorted((tiny_dataset / "train" / "elephant").iterdir())[0]
    copy = tiny_dataset / "train" / "zebra" / "copy-of-an-elephant.png"
    shutil.copyfile(elephant, copy)
    sha = _sha(copy)
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])

    request = service.forget({"model": model["id"], "class_name": "elephant", "method": "sisa"})

    assert request["status"] == "completed", request
    assert request["plan"]["identical_copies"] == [{"sha256": sha, "extra_copies": 1}]
    assert "copy-of-an-elephant" not in str(request["plan"])  # hashes and counts, never names
    assert not copy.exists() and not elephant.exists()
    copies = _samples_with_hash(sha)
    assert len(copies) == 2 and {s.state for s in copies} == {"deleted"}
    assert not {s.id for s in copies} & _current_manifest(model["id"])


def _checkpoints(model_id: int, number: int) -> list[Checkpoint]:
    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        assert version is not None
        return list(
            session.scalars(select(Checkpoint).where(Checkpoint.version_id == version.id)).all()
        )


def test_a_refused_version_keeps_the_files_but_not_its_weights(
    sqlite_service, tiny_dataset: Path
) -> None:
    """Fine-tuning with a wrecking learning rate is refused by the retained-accuracy guard. Its
    weights came from a parent that saw the data and will never serve, so they are purged; the
    parent's stay (it is still current) and so does the file, for a retry."""
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], name="mono", shards=1, slices=1, epochs_per_slice=8)
    victim = sorted((tiny_dataset / "train" / "elephant").iterdir())[0]
    parent_keys = {c.key for c in _checkpoints(model["id"], 1)}

    refused = service.forget(
        {
            "model": model["id"],
            "filenames": [victim.name],
            "method": "finetune",
            "method_config": {"epochs": 1, "batch_size": 32, "lr": 1.0},
        }
    )

    assert refused["status"] == "failed", refused
    assert "retained classes fell" in refused["status_reason"]
    assert victim.exists()
    own = [c for c in _checkpoints(model["id"], 2) if c.key not in parent_keys]
    assert own, "the refused version trained weights of its own"
    assert all(c.purged for c in own)
    assert not any(store().exists(CHECKPOINTS, c.key) for c in own)
    assert all(store().exists(CHECKPOINTS, key) for key in parent_keys)


def _request(service, request_id: str) -> dict:  # type: ignore[no-untyped-def]
    return service.client.get(f"/v1/deletion-requests/{request_id}").json()


def test_a_file_shared_by_two_models_is_erased_once_both_have_forgotten_it(
    sqlite_service, tiny_dataset: Path
) -> None:
    """Models a and b trained on one dataset. Erasing a file for a creates a linked request
    for b; the file stays (b still trains on it) and a's request waits, `verifying`, until b
    has retrained without it; b's erasure then erases it and completes both. b's later
    retrains and audits never meet an erased file, and no old weights of either model that
    saw it are left."""
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    a = service.train_model(dataset["id"], name="a")
    b = service.train_model(dataset["id"], name="b", seed=11)
    victim = sorted((tiny_dataset / "train" / "bear").iterdir())[0]
    sha = _sha(victim)

    asked = service.submit({"model": a["id"], "filenames": [str(victim.relative_to(tiny_dataset))]})
    (link,) = asked["plan"]["linked_requests"]
    assert link["model"] == b["id"]
    linked = _request(service, link["request"])
    assert linked["plan"]["linked_to"] == asked["id"] and linked["method"] == "sisa"
    assert linked["due_at"] == asked["due_at"]
    # A linked request goes with the request it serves: it cannot be cancelled alone.
    refused = service.client.post(f"/v1/deletion-requests/{link['request']}/cancel")
    assert refused.status_code == 409 and asked["id"] in refused.json()["detail"]

    service.run_worker(a["id"])
    waiting = _request(service, asked["id"])
    assert waiting["status"] == "verifying", waiting
    assert "kept until the other models" in waiting["status_reason"]
    assert waiting["progress"]["phase"] == "waiting_for_other_models"
    assert victim.exists()  # b still serves a version trained on it
    (sample,) = _samples_with_hash(sha)
    assert sample.state == "active" and sample.id not in _current_manifest(a["id"])

    service.run_worker(b["id"])
    for request_id in (asked["id"], link["request"]):
        done = _request(service, request_id)
        assert done["status"] == "completed", done
    assert not victim.exists()
    (sample,) = _samples_with_hash(sha)
    assert sample.state == "deleted"
    assert sample.id not in _current_manifest(b["id"])
    kinds = [
        e["kind"]
        for e in service.client.get(f"/v1/deletion-requests/{asked['id']}/events").json()["events"]
    ]
    assert kinds[-3:] == ["files_held", "files_erased", "completed"], kinds
    # Every checkpoint of either model that trained on the file is purged, its blob deleted.
    with session_scope() as session:
        stale = session.scalars(
            select(Checkpoint)
            .join(ManifestEntry, ManifestEntry.version_id == Checkpoint.version_id)
            .where(
                ManifestEntry.sample_id == sample.id,
                Checkpoint.shard == ManifestEntry.shard,
                Checkpoint.slice >= ManifestEntry.slice,
            )
        ).all()
        assert {c.version_id for c in stale} and all(c.purged for c in stale)
        assert not any(store().exists(CHECKPOINTS, c.key) for c in stale)

    # b's later retrain and audit work: the erased sample is in none of its training sets.
    other = sorted((tiny_dataset / "train" / "zebra").iterdir())[0]
    later = service.submit({"model": b["id"], "filenames": [str(other.relative_to(tiny_dataset))]})
    (back,) = later["plan"]["linked_requests"]  # a trained on that file too
    assert back["model"] == a["id"]
    service.run_worker(b["id"])
    service.run_worker(a["id"])
    for request_id in (later["id"], back["request"]):
        done = _request(service, request_id)
        assert done["status"] == "completed", done
    assert not other.exists()
    report = service.client.get(f"/v1/deletion-requests/{later['id']}/report")
    assert report.status_code == 200 and report.json()["report"]["lineage"]["verified"] is True


def test_an_exact_retrain_leaves_out_samples_erased_before_the_rule(
    sqlite_service, tiny_dataset: Path
) -> None:
    """A database from before files were held for every model: b's current version lists a
    sample whose file another model's request erased. b's next exact retrain leaves it out
    (it used to fail, unable to read it) and its proof and audit hold."""
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    b = service.train_model(dataset["id"], name="b")
    gone = sorted((tiny_dataset / "train" / "bear").iterdir())[0]
    sha = _sha(gone)
    gone.unlink()
    with session_scope() as session:  # what the old erasure left behind
        (sample,) = session.scalars(select(Sample).where(Sample.sha256 == sha)).all()
        sample.state, sample.rel_path, sample.file_name = "deleted", None, None
    assert sample.id in _current_manifest(b["id"])

    other = sorted((tiny_dataset / "train" / "zebra").iterdir())[0]
    later = service.forget({"model": b["id"], "filenames": [str(other.relative_to(tiny_dataset))]})

    assert later["status"] == "completed", later
    assert sample.id not in _current_manifest(b["id"])
    report = service.client.get(f"/v1/deletion-requests/{later['id']}/report")
    assert report.status_code == 200 and report.json()["report"]["lineage"]["verified"] is True


def test_linked_requests_follow_the_approval_and_cancellation_of_their_request(
    sqlite_service, tiny_dataset: Path
) -> None:
    service = sqlite_service
    client = service.client
    dataset = service.register_dataset(tiny_dataset)
    small = {"shards": 1, "slices": 1, "epochs_per_slice": 1}
    a = service.train_model(dataset["id"], name="a", **small)
    b = service.train_model(dataset["id"], name="b", seed=11, **small)
    client.patch(f"/v1/models/{a['id']}", json={"require_approval": True})
    files = sorted(
        str(p.relative_to(tiny_dataset)) for p in (tiny_dataset / "train").rglob("*.png")
    )

    first = service.submit({"model": a["id"], "filenames": [files[0]]})
    (link,) = first["plan"]["linked_requests"]
    assert first["status"] == "pending_approval"
    assert _request(service, link["request"])["status"] == "pending_approval"
    approved = client.post(f"/v1/deletion-requests/{first['id']}/approve", json={"reason": "ok"})
    assert approved.status_code == 200, approved.text
    assert _request(service, link["request"])["status"] in ("received", "queued")

    second = service.submit({"model": a["id"], "filenames": [files[1]]})
    (other,) = second["plan"]["linked_requests"]
    alone = client.post(f"/v1/deletion-requests/{other['request']}/deny", json={"reason": "no"})
    assert alone.status_code == 409 and second["id"] in alone.json()["detail"]
    denied = client.post(f"/v1/deletion-requests/{second['id']}/deny", json={"reason": "no"})
    assert denied.status_code == 200, denied.text
    shown = _request(service, other["request"])
    assert shown["status"] == "denied" and second["id"] in shown["status_reason"]

    client.patch(f"/v1/models/{a['id']}", json={"require_approval": False})
    third = service.submit({"model": a["id"], "filenames": [files[2]]})
    (last,) = third["plan"]["linked_requests"]
    cancelled = client.post(f"/v1/deletion-requests/{third['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert _request(service, last["request"])["status"] == "cancelled"
    for path in files[:3]:
        assert (tiny_dataset / path).exists()  # nothing ran yet
    assert b["id"] == link["model"] == other["model"] == last["model"]
