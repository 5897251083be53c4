"""Registering ImageFolder datasets inside the data roots: resolve, scan, check and store
every sample."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.db.models import Dataset, Sample, SampleState, Tombstone
from app.services.data_roots import clip, containing_root, listing, overlaps
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.image_folder import SPLITS, ScannedFile, scan_image_folder


def _holdout_split(files: list[ScannedFile], fraction: float, seed: int) -> dict[str, str]:
    """Seeded, per-class held-out test fraction for datasets without a test/ folder."""
    rng = random.Random(seed)
    split: dict[str, str] = {}
    by_class: dict[str, list[ScannedFile]] = {}
    for item in files:
        by_class.setdefault(item.class_name, []).append(item)
    for members in by_class.values():
        ordered = sorted(members, key=lambda f: f.sha256)
        rng.shuffle(ordered)
        n_test = max(1, round(len(ordered) * fraction)) if len(ordered) > 1 else 0
        for position, item in enumerate(ordered):
            split[item.rel_path] = "test" if position < n_test else "train"
    return split


def resolve_dataset_root(root_text: str, data_roots: Sequence[Path]) -> Path:
    """The real path of a dataset root inside one of the data roots, or InvalidInput."""
    if not root_text.startswith("/") or "\x00" in root_text:
        raise InvalidInput(f"root must be an absolute server-side path, got {clip(root_text)!r}")
    real = Path(os.path.realpath(root_text))
    if containing_root(real, data_roots) is None:
        # Says nothing about whether the path exists: outside the roots, nothing is looked at.
        raise InvalidInput(
            f"root {clip(root_text)!r} is not inside a data root; datasets must lie under "
            "one of the folders in FORGETD_DATA_ROOTS"
        )
    return real


def _check_no_overlap(session: Session, real: Path) -> None:
    """A folder belongs to one dataset: erasing through one must not leave copies in another."""
    clashes = [
        name
        for name, other in session.execute(select(Dataset.name, Dataset.root)).all()
        if overlaps(real, Path(os.path.realpath(other)))
    ]
    if clashes:
        raise InvalidInput(
            f"root overlaps the root of {len(clashes)} registered dataset(s) "
            f"{sorted(clashes)[:20]}: it is, contains or lies inside another dataset's folder",
            overlapping_datasets=sorted(clashes)[:20],
        )


def _lock_registrations(session: Session) -> None:
    """Serialise the overlap check and the insert of concurrent registrations."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
    else:  # SQLite: a write takes the database's write lock until the commit
        session.execute(update(Dataset).where(Dataset.id == -1).values(name=Dataset.name))


def _refuse_tombstoned(session: Session, files: list[ScannedFile]) -> None:
    hashes = {f.sha256 for f in files}
    tombstoned = (
        set(session.scalars(select(Tombstone.sha256).where(Tombstone.sha256.in_(hashes))).all())
        if hashes
        else set()
    )
    if tombstoned:
        refused = [f.rel_path for f in files if f.sha256 in tombstoned]
        raise Conflict(
            f"{len(refused)} files hold images that were deleted on request and may not be "
            "registered again",
            files=listing(refused),
        )


def register_dataset(
    session: Session,
    *,
    name: str,
    root_text: str,
    data_roots: Sequence[Path],
    holdout_fraction: float,
    seed: int = 0,
) -> Dataset:
    if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise Conflict(f"a dataset named {name!r} already exists")
    root = resolve_dataset_root(root_text, data_roots)
    _check_no_overlap(session, root)
    classes, files = scan_image_folder(root)
    _refuse_tombstoned(session, files)
    has_test = any(f.split == "test" for f in files)
    split_of = (
        {f.rel_path: f.split for f in files}
        if has_test
        else _holdout_split(files, holdout_fraction, seed)
    )
    channels = 1 if all(f.mode in ("L", "1", "I;16", "I", "LA") for f in files) else 3
    class_index = {name: i for i, name in enumerate(classes)}
    _lock_registrations(session)
    _check_no_overlap(session, root)
    dataset = Dataset(
        name=name, root=str(root), classes=classes, channels=channels, has_test_folder=has_test
    )
    session.add(dataset)
    session.flush()
    session.bulk_insert_mappings(
        Sample,  # type: ignore[arg-type]
        [
            {
                "dataset_id": dataset.id,
                "rel_path": f.rel_path,
                "file_name": Path(f.rel_path).name,
                "split": split_of[f.rel_path],
                "class_index": class_index[f.class_name],
                "sha256": f.sha256,
                "state": SampleState.ACTIVE,
            }
            for f in files
        ],
    )
    return dataset


def get_dataset(session: Session, ref: int | str) -> Dataset:
    """A dataset by id or by name."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        dataset = session.get(Dataset, int(ref))
    else:
        dataset = session.scalar(select(Dataset).where(Dataset.name == ref))
    if dataset is None:
        raise NotFound(f"dataset {clip(ref)!r} does not exist")
    return dataset


def dataset_counts(session: Session, dataset: Dataset) -> dict[str, Any]:
    rows = session.execute(
        select(Sample.split, Sample.class_index, Sample.state, func.count())
        .where(Sample.dataset_id == dataset.id)
        .group_by(Sample.split, Sample.class_index, Sample.state)
    ).all()
    counts: dict[str, Any] = {
        split: {"total": 0, "per_class": dict.fromkeys(dataset.classes, 0)} for split in SPLITS
    }
    deleted = 0
    for split, class_index, state, n in rows:
        if state != SampleState.ACTIVE:  # deleted, or being erased
            deleted += n
            continue
        counts[split]["total"] += n
        counts[split]["per_class"][dataset.classes[class_index]] += n
    counts["deleted"] = deleted
    return counts


def duplicate_content(session: Session, dataset: Dataset) -> dict[str, int]:
    """Active samples whose bytes another active sample repeats: ``groups`` of identical
    images and the ``extra_copies`` beyond the first of each. A deletion by file forgets every
    copy of the named content, so these say how many files such a deletion may take along."""
    per_hash = (
        select(func.count().label("n"))
        .where(Sample.dataset_id == dataset.id, Sample.state == SampleState.ACTIVE)
        .group_by(Sample.sha256)
        .having(func.count() > 1)
        .subquery()
    )
    groups, copies = session.execute(
        select(func.count(), func.coalesce(func.sum(per_hash.c.n), 0)).select_from(per_hash)
    ).one()
    return {"groups": int(groups), "extra_copies": int(copies) - int(groups)}
