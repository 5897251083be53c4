"""Files that several models of one dataset trained on (see app.services.shared_erasure).

A file is erased only when no model still trains on it: no current version and no version
being built lists its sample. A request whose files are held that way stays ``verifying``
(its own model already serves a version without them) until the last model has forgotten them;
that model's erasure then completes it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.db.models import (
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    RequestStatus,
    Sample,
    SampleState,
    VersionStatus,
)
from app.services import events
from app.services.shared_erasure import link_other_models
from worker.flows.common import now
from worker.flows.timings import finish

BUILDING = (VersionStatus.TRAINING, VersionStatus.EVALUATING)


def held_samples(session: Session, dataset_id: int, sample_ids: Sequence[int]) -> set[int]:
    """Those of ``sample_ids`` that some model of the dataset still trains on (call it after
    the new version was made current, so that the model erasing them does not hold them)."""
    held: set[int] = set()
    ids = list(sample_ids)
    for start in range(0, len(ids), 5000):  # stays under SQLite's bound-parameter limit
        held.update(
            session.scalars(
                select(ManifestEntry.sample_id)
                .join(ModelVersion, ModelVersion.id == ManifestEntry.version_id)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(
                    Model.dataset_id == dataset_id,
                    ManifestEntry.sample_id.in_(ids[start : start + 5000]),
                    or_(
                        Model.current_version_id == ModelVersion.id,
                        ModelVersion.status.in_(BUILDING),
                    ),
                )
            ).all()
        )
    return held


def unerased_targets(session: Session, request_ids: Sequence[str]) -> dict[str, int]:
    """request id -> how many of its samples are not erased yet (absent when none)."""
    rows = session.execute(
        select(DeletionTarget.request_id, func.count())
        .join(Sample, Sample.id == DeletionTarget.sample_id)
        .where(
            DeletionTarget.request_id.in_(list(request_ids)),
            Sample.state != SampleState.DELETED,
        )
        .group_by(DeletionTarget.request_id)
    ).all()
    return {request_id: int(count) for request_id, count in rows}


def hold(session: Session, request: DeletionRequest, number: int, erased: int, held: int) -> None:
    """The request's model is free of the data, but other models still train on ``held`` of
    its files: it stays verifying, and says so."""
    request.status = RequestStatus.VERIFYING
    request.status_reason = (
        f"forgotten by this model in version {number}; {erased} files erased, {held} kept "
        "until the other models of the dataset that trained on them have forgotten them too "
        "(plan.linked_requests, or the request in plan.linked_to)"
    )
    events.record(session, request, "files_held", files=held, erased=erased)
    # A model that trained on them since the request was made gets its own linked request
    # (left received: the sweep sends it to the workers).
    still_there = session.scalars(
        select(DeletionTarget.sample_id)
        .join(Sample, Sample.id == DeletionTarget.sample_id)
        .where(DeletionTarget.request_id == request.id, Sample.state == SampleState.ACTIVE)
    ).all()
    link_other_models(session, request, still_there)


def complete_released(session: Session, dataset_id: int) -> list[DeletionRequest]:
    """Complete every request of the dataset's models that waited only for its held files,
    now that none is left. (A live batch's own requests are excluded: their batch decides.)"""
    waiting = session.scalars(
        select(DeletionRequest)
        .join(Model, Model.id == DeletionRequest.model_id)
        .where(
            Model.dataset_id == dataset_id,
            DeletionRequest.status == RequestStatus.VERIFYING,
            DeletionRequest.result_version_id.is_not(None),
            or_(Model.active_batch.is_(None), Model.active_batch != DeletionRequest.batch_id),
        )
    ).all()
    if not waiting:
        return []
    left = unerased_targets(session, [r.id for r in waiting])
    released = [r for r in waiting if not left.get(r.id)]
    for request in released:
        version = session.get(ModelVersion, request.result_version_id)
        number = version.number if version is not None else None
        erased = int(
            session.scalar(
                select(func.count())
                .select_from(DeletionTarget)
                .where(DeletionTarget.request_id == request.id)
            )
            or 0
        )
        request.status = RequestStatus.COMPLETED
        request.completed_at = now()
        request.status_reason = (
            f"forgotten in version {number}; {erased} files erased, the last once every "
            "model of the dataset had forgotten them"
        )
        events.record(
            session, request, "files_erased", status=RequestStatus.VERIFYING, files=erased
        )
        events.record(session, request, "completed", version=number)
        finish(request)
    return released


def erased_in(session: Session, version_id: int) -> list[int]:
    """Samples of a version's manifest whose files are already erased. None should be left (a
    file is erased only once no model trains on it), but a database from before that rule may
    hold some: an exact retrain leaves them out rather than fail to read them."""
    return sorted(
        session.scalars(
            select(ManifestEntry.sample_id)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(ManifestEntry.version_id == version_id, Sample.state == SampleState.DELETED)
        ).all()
    )
