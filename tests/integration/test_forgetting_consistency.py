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
    model = service.train_model(
        dataset["id"], name="mono", shards=1, slices=1, epochs_per_slice=8
    )
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
