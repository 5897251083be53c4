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
