"""Loading a dataset's samples as tensors, with a decoded-image cache per sample list."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset, Sample
from app.settings import Settings
from worker.training.data import ImageDecodeError, load_images


class SampleUnreadableError(RuntimeError):
    """A sample's image cannot be read; the message names its hash, never its file."""


@dataclass(frozen=True)
class SampleRow:
    sample_id: int
    rel_path: str | None
    sha256: str
    class_index: int


def sample_rows(session: Session, sample_ids: Sequence[int]) -> list[SampleRow]:
    """Rows in the order of `sample_ids`."""
    found: dict[int, SampleRow] = {}
    ids = list(sample_ids)
    for start in range(0, len(ids), 5000):  # stays under SQLite's bound-parameter limit
        chunk = ids[start : start + 5000]
        for sid, rel_path, sha, class_index in session.execute(
            select(Sample.id, Sample.rel_path, Sample.sha256, Sample.class_index).where(
                Sample.id.in_(chunk)
            )
        ).all():
            found[sid] = SampleRow(sid, rel_path, sha, class_index)
    return [found[sid] for sid in ids]


def dataset_cache_dir(settings: Settings, dataset_id: int) -> Path:
    assert settings.cache_root is not None
    return settings.cache_root / "datasets" / str(dataset_id)


def purge_dataset_cache(settings: Settings, dataset_id: int) -> None:
    """Decoded copies of deleted images must go too: drop the dataset's whole cache."""
    shutil.rmtree(dataset_cache_dir(settings, dataset_id), ignore_errors=True)


def load_tensors(
    settings: Settings, dataset: Dataset, rows: Sequence[SampleRow], image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, C, S, S] and int64 labels [N], in the order of `rows`."""
    if not rows:
        empty = torch.zeros((0, dataset.channels, image_size, image_size), dtype=torch.uint8)
        return empty, torch.zeros(0, dtype=torch.int64)
    order_hash = hashlib.sha256("\n".join(r.sha256 for r in rows).encode()).hexdigest()
    root = Path(dataset.root)
    missing = [r.sha256 for r in rows if r.rel_path is None]
    if missing:
        raise SampleUnreadableError(f"samples {missing[:20]} were erased and have no file")
    try:
        images = load_images(
            [root / str(r.rel_path) for r in rows],
            image_size=image_size,
            channels=dataset.channels,
            cache_dir=dataset_cache_dir(settings, dataset.id),
            cache_key=order_hash[:32],
        )
    except ImageDecodeError as exc:
        raise SampleUnreadableError(
            f"the image of sample {rows[exc.index].sha256} cannot be read ({exc.reason})"
        ) from None
    labels = torch.tensor([r.class_index for r in rows], dtype=torch.int64)
    return images, labels
