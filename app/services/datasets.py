"""Registering ImageFolder datasets: scan, hash, check and store every sample."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Dataset, Sample, SampleState, Tombstone
from app.services.errors import Conflict, InvalidInput, NotFound

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ScannedFile:
    rel_path: str
    split: str
    class_name: str
    sha256: str
    mode: str


def _list_class_folders(split_dir: Path) -> dict[str, list[Path]]:
    folders: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        folders[class_dir.name] = sorted(
            p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    return folders


def _inspect_image(path: Path) -> tuple[str, str]:
    """sha256 of the file's bytes and its PIL mode; raises OSError/UnidentifiedImageError."""
    data = path.read_bytes()
    with Image.open(path) as image:
        image.load()  # decodes fully: verify() alone misses truncated JPEG data
        mode = image.mode
    return hashlib.sha256(data).hexdigest(), mode


def scan_image_folder(root: Path) -> tuple[list[str], list[ScannedFile]]:
    """Scan `root/train/<class>/*` and optional `root/test/<class>/*`.

    Raises InvalidInput naming every problem found (empty classes, unreadable images, files
    that are not images, test classes unknown to train).
    """
    if not root.is_absolute():
        raise InvalidInput(f"root must be an absolute server-side path, got {str(root)!r}")
    if not root.is_dir():
        raise InvalidInput(f"root {str(root)!r} does not exist or is not a folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise InvalidInput(
            f"root {str(root)!r} is not an ImageFolder tree: it has no train/ folder "
            "(expected train/<class>/<image>, optional test/<class>/<image>)"
        )
    train = _list_class_folders(train_dir)
    if not train:
        raise InvalidInput(f"{str(train_dir)!r} holds no class folders")
    classes = sorted(train)
    problems: list[str] = []
    files: list[ScannedFile] = []
    per_split = {"train": train}
    if (root / "test").is_dir():
        per_split["test"] = _list_class_folders(root / "test")
        unknown = sorted(set(per_split["test"]) - set(classes))
        if unknown:
            problems.append(f"test/ has classes that train/ lacks: {unknown}")
    empty = [f"train/{name}" for name, paths in train.items() if not paths]
    if empty:
        problems.append(f"empty class folders: {empty}")
    unreadable: list[str] = []
    for split, folders in per_split.items():
        for class_name, paths in folders.items():
            for path in paths:
                rel_path = path.relative_to(root).as_posix()
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    unreadable.append(rel_path)
                    continue
                try:
                    sha, mode = _inspect_image(path)
                except (OSError, UnidentifiedImageError, ValueError):
                    unreadable.append(rel_path)
                    continue
                files.append(ScannedFile(rel_path, split, class_name, sha, mode))
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable or non-image files: {unreadable[:20]}")
    if problems:
        raise InvalidInput("dataset refused: " + "; ".join(problems), problems=problems)
    return classes, files


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


def register_dataset(
    session: Session, *, name: str, root: Path, holdout_fraction: float, seed: int = 0
) -> Dataset:
    if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise Conflict(f"a dataset named {name!r} already exists")
    classes, files = scan_image_folder(root)
    hashes = {f.sha256 for f in files}
    tombstoned = (
        set(session.scalars(select(Tombstone.sha256).where(Tombstone.sha256.in_(hashes))).all())
        if hashes
        else set()
    )
    if tombstoned:
        refused = sorted(f.rel_path for f in files if f.sha256 in tombstoned)
        raise Conflict(
            f"{len(refused)} files hold images that were deleted on request and may not be "
            "registered again",
            files=refused[:100],
        )
    has_test = any(f.split == "test" for f in files)
    split_of = (
        {f.rel_path: f.split for f in files}
        if has_test
        else _holdout_split(files, holdout_fraction, seed)
    )
    channels = 1 if all(f.mode in ("L", "1", "I;16", "I", "LA") for f in files) else 3
    class_index = {name: i for i, name in enumerate(classes)}
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
        raise NotFound(f"dataset {ref!r} does not exist")
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
        if state == SampleState.DELETED:
            deleted += n
            continue
        counts[split]["total"] += n
        counts[split]["per_class"][dataset.classes[class_index]] += n
    counts["deleted"] = deleted
    return counts
