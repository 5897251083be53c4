"""Sample queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Sample, SampleState


def active_test_ids(session: Session, dataset_id: int) -> list[int]:
    """The dataset's active test samples in content-hash order: the one order every evaluation
    uses, so the decoded-image cache is shared between them."""
    return list(
        session.scalars(
            select(Sample.id)
            .where(
                Sample.dataset_id == dataset_id,
                Sample.split == "test",
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.sha256)
        ).all()
    )
