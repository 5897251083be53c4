"""Sample queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Sample, SampleState


def active_test_ids(session: Session, dataset_id: int) -> list[int]:
    """The dataset's active test samples, less the validation split, in content-hash order: the
    one order every evaluation uses, so the decoded-image cache is shared between them."""
    return [i for i, h in _active_split(session, dataset_id) if not is_validation(h)]


# One test image in VALIDATION_EVERY, chosen by its content hash (stable as samples come and
# go), is held out as the validation split: a deletion's targets are checked on it, and every
# reported test figure leaves it out, so the figures a request is judged on are never the ones
# it is reported with.
VALIDATION_EVERY = 5


def is_validation(sha256: str) -> bool:
    return int(sha256[-8:], 16) % VALIDATION_EVERY == 0


def _active_split(session: Session, dataset_id: int) -> list[tuple[int, str]]:
    return [
        (int(i), str(h))
        for i, h in session.execute(
            select(Sample.id, Sample.sha256)
            .where(
                Sample.dataset_id == dataset_id,
                Sample.split == "test",
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.sha256)
        ).all()
    ]


def active_validation_ids(session: Session, dataset_id: int) -> list[int]:
    """The active test images held out as the validation split, in content-hash order."""
    return [i for i, h in _active_split(session, dataset_id) if is_validation(h)]


def class_train_ids(session: Session, dataset_id: int, class_indices: Sequence[int]) -> list[int]:
    """The active training images of ``class_indices``, in content-hash order."""
    return [
        int(i)
        for i in session.scalars(
            select(Sample.id)
            .where(
                Sample.dataset_id == dataset_id,
                Sample.split == "train",
                Sample.state == SampleState.ACTIVE,
                Sample.class_index.in_(list(class_indices)),
            )
            .order_by(Sample.sha256)
        ).all()
    ]
