"""Erasing a batch's image files: check every file first, record the intent, then unlink.

Each file must still be a regular, singly linked file inside its dataset's root (reached
without following any link, the root inside the data roots) whose bytes hash to the sample's
sha256. If any file fails, nothing is erased and the batch fails with a reason that names
sample hashes only. The samples are marked ``erasing`` and committed before the first unlink,
so a worker that dies midway resumes the erasure: a file already gone is then accepted only
for a sample in that state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset, DeletionTarget, Sample, SampleState, Tombstone
from app.services.data_roots import (
    FileIdentity,
    FileMissingError,
    UnsafeFileError,
    containing_root,
    erase_file,
    verify_file,
)
from worker.flows.common import now

PENDING = (SampleState.ACTIVE, SampleState.ERASING)
MAX_REASONS = 20


class ErasureRefusedError(RuntimeError):
    """Some file cannot be erased safely; nothing was erased. The message names hashes."""


@dataclass(frozen=True)
class CheckedFile:
    sample_id: int
    sha256: str
    rel_path: str
    identity: FileIdentity | None
    """None: the file is already gone (a resumed erasure)."""


def pending_samples(session: Session, request_ids: Sequence[str]) -> list[Sample]:
    return list(
        session.scalars(
            select(Sample)
            .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
            .where(DeletionTarget.request_id.in_(request_ids), Sample.state.in_(PENDING))
            .order_by(Sample.id)
        )
        .unique()
        .all()
    )


def _refused(problems: dict[str, str], total: int) -> ErasureRefusedError:
    shown = "; ".join(f"sample {sha}: {why}" for sha, why in sorted(problems.items())[:MAX_REASONS])
    more = f" (and {len(problems) - MAX_REASONS} more)" if len(problems) > MAX_REASONS else ""
    return ErasureRefusedError(
        f"{len(problems)} of {total} files cannot be erased safely, so none was erased: "
        f"{shown}{more}"
    )


def check_files(
    dataset: Dataset, samples: Sequence[Sample], data_roots: Sequence[Path]
) -> list[CheckedFile]:
    """Verify every file of ``samples``; raises ErasureRefusedError naming the hashes."""
    root = Path(os.path.realpath(dataset.root))
    if root != Path(dataset.root) or containing_root(root, data_roots) is None:
        raise ErasureRefusedError(
            f"the root of dataset {dataset.id} is no longer a real folder inside the data "
            f"roots, so none of its {len(samples)} files was erased"
        )
    checked: list[CheckedFile] = []
    problems: dict[str, str] = {}
    for sample in samples:
        if sample.rel_path is None:
            continue
        try:
            identity: FileIdentity | None = verify_file(root, sample.rel_path, sample.sha256)
        except FileMissingError as exc:
            if sample.state != SampleState.ERASING:
                problems[sample.sha256] = str(exc)
                continue
            identity = None  # erased before a crash: the intent was recorded first
        except UnsafeFileError as exc:
            problems[sample.sha256] = str(exc)
            continue
        checked.append(CheckedFile(sample.id, sample.sha256, sample.rel_path, identity))
    if problems:
        raise _refused(problems, len(samples))
    return checked


def unlink_files(dataset: Dataset, files: Sequence[CheckedFile]) -> None:
    root = Path(dataset.root)
    problems: dict[str, str] = {}
    for item in files:
        if item.identity is None:
            continue
        try:
            erase_file(root, item.rel_path, item.identity)
        except UnsafeFileError as exc:
            problems[item.sha256] = str(exc)
    if problems:
        raise _refused(problems, len(files))


def forget_samples(session: Session, request_id: str, sample_ids: set[int]) -> int:
    """Mark the request's erased samples deleted, drop their names and tombstone their hashes.
    Returns how many samples this request erased."""
    samples = session.scalars(
        select(Sample)
        .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
        .where(DeletionTarget.request_id == request_id, Sample.id.in_(sample_ids))
        .where(Sample.state.in_(PENDING))
    ).all()
    hashes = {s.sha256 for s in samples}
    known = set(session.scalars(select(Tombstone.sha256).where(Tombstone.sha256.in_(hashes))))
    for sample in samples:
        sample.state = SampleState.DELETED
        sample.deleted_at = now()
        # The hash, class and split stay (the audit and tombstones need them); names go.
        sample.rel_path = None
        sample.file_name = None
        if sample.sha256 not in known:
            session.add(Tombstone(sha256=sample.sha256, request_id=request_id))
            known.add(sample.sha256)
    session.flush()
    return len(samples)
