"""Loading a dataset's samples as tensors, with a decoded-image cache per sample list."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Collection, Sequence
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


_SAMPLES_SUFFIX = ".samples"


def purge_dataset_cache(
    settings: Settings, dataset_id: int, erased: Collection[str] | None = None
) -> int:
    """Decoded copies of erased images must go too: every decoded array of the dataset that
    holds one of the ``erased`` sample hashes, or whose list of samples is not on record, is
    deleted (``erased`` None: the whole cache). Arrays of untouched sample lists (other
    shards, the test split) stay for the next request. Returns how many arrays went."""
    folder = dataset_cache_dir(settings, dataset_id)
    if erased is None:
        shutil.rmtree(folder, ignore_errors=True)
        return -1
    gone = set(erased)
    removed = 0
    for array in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
        listing = folder / (array.name.split("-", 1)[0] + _SAMPLES_SUFFIX)
        try:
            held = set(listing.read_text().split())
        except FileNotFoundError:
            held = None
        if held is None or held & gone:
            array.unlink(missing_ok=True)
            listing.unlink(missing_ok=True)
            removed += 1
    for stray in folder.glob(".*") if folder.is_dir() else []:
        stray.unlink(missing_ok=True)  # a temporary file of a write cut off may hold any image
    return removed


def _record_samples(folder: Path, key: str, rows: Sequence[SampleRow]) -> None:
    """The sample hashes a decoded array holds, beside it, so a purge can tell which to drop.
    Written after the array: an array found without its list is dropped by any purge."""
    listing = folder / f"{key}{_SAMPLES_SUFFIX}"
    if listing.exists():
        return
    tmp = folder / f".tmp-{key}{_SAMPLES_SUFFIX}"
    tmp.write_text("\n".join(r.sha256 for r in rows))
    tmp.replace(listing)


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
        _record_samples(dataset_cache_dir(settings, dataset.id), order_hash[:32], rows)
    except ImageDecodeError as exc:
        raise SampleUnreadableError(
            f"the image of sample {rows[exc.index].sha256} cannot be read ({exc.reason})"
        ) from None
    labels = torch.tensor([r.class_index for r in rows], dtype=torch.int64)
    return images, labels
