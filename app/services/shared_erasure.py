"""One dataset, several models: a file erased for one model must be gone from all of them.

A request that targets samples also trained on by another model of the same dataset gets a
*linked request* for that model (exact, by file: `sisa`, a full retrain on a monolithic
model), created with it, holding the same deadline and following its approval, denial and
cancellation. The worker erases a file only when no model's current version, and no version
being built, still trains on it; a request whose files are held that way stays `verifying`
until the last model has forgotten them, and the erasure by that model completes it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.methods import validate_config
from app.core.options import RequestOptions
from app.db.models import (
    OPEN_REQUEST_STATES,
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    RequestStatus,
    VersionStatus,
)
from app.services import events
from app.services.versions import load_placements
from app.sisa.planner import plan_deletion

LINKED_METHOD = "sisa"
BUILDING = (VersionStatus.TRAINING, VersionStatus.EVALUATING)


def _trained_on(session: Session, version_id: int, sample_ids: Sequence[int]) -> list[int]:
    found: set[int] = set()
    ids = list(sample_ids)
    for start in range(0, len(ids), 5000):  # stays under SQLite's bound-parameter limit
        found.update(
            session.scalars(
                select(ManifestEntry.sample_id).where(
                    ManifestEntry.version_id == version_id,
                    ManifestEntry.sample_id.in_(ids[start : start + 5000]),
                )
            ).all()
        )
    return sorted(found)


def _trains_on(session: Session, model: Model) -> int | None:
    """The version whose training set the model serves or is building: its current version,
    else (a first training under way) the newest version being built."""
    if model.current_version_id is not None:
        return model.current_version_id
    return session.scalar(
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model.id, ModelVersion.status.in_(BUILDING))
        .order_by(ModelVersion.number.desc())
        .limit(1)
    )


def _covered(session: Session, model_id: int, sample_ids: Sequence[int]) -> set[int]:
    """Those of ``sample_ids`` that an open request of the model already targets."""
    return set(
        session.scalars(
            select(DeletionTarget.sample_id)
            .join(DeletionRequest, DeletionRequest.id == DeletionTarget.request_id)
            .where(
                DeletionRequest.model_id == model_id,
                DeletionRequest.status.in_(OPEN_REQUEST_STATES),
                DeletionTarget.sample_id.in_(list(sample_ids)),
            )
        ).all()
    )


def _linked_request(
    session: Session, request: DeletionRequest, other: Model, version_id: int, held: list[int]
) -> DeletionRequest:
    plan = plan_deletion(
        load_placements(session, version_id),
        held,
        shards=other.recipe.shards,
        slices=other.recipe.slices,
        full_retrain=False,
    )
    waiting = request.status == RequestStatus.PENDING_APPROVAL
    return DeletionRequest(
        model_id=other.id,
        owner_key_id=request.owner_key_id,
        target_kind="files",
        target_classes=[],
        method=LINKED_METHOD,
        method_config=validate_config(LINKED_METHOD, None).model_dump(mode="json"),
        options=RequestOptions().model_dump(mode="json"),
        linked_to=request.id,
        request_fingerprint=request.request_fingerprint,
        status=RequestStatus.PENDING_APPROVAL if waiting else RequestStatus.RECEIVED,
        status_reason=f"waits for the approval of request {request.id}" if waiting else None,
        plan={
            **plan.to_dict(),
            "samples": len(held),
            "exact": True,
            "identical_copies": [],
            "linked_to": request.id,
        },
        base_version_id=version_id,
        due_at=request.due_at,
        attempt=1,
    )


def link_other_models(
    session: Session, request: DeletionRequest, sample_ids: Sequence[int] | None = None
) -> list[DeletionRequest]:
    """Create a linked request on every other model of the dataset that trains on one of
    ``request``'s samples (or of ``sample_ids``) that no request of that model targets yet;
    adds them to ``request.plan.linked_requests``. Called when the request is stored, and by
    the worker for files still held when it erases (a model trained since)."""
    model = session.get(Model, request.model_id)
    assert model is not None
    session.flush()
    if sample_ids is None:
        sample_ids = session.scalars(
            select(DeletionTarget.sample_id).where(DeletionTarget.request_id == request.id)
        ).all()
    others = session.scalars(
        select(Model)
        .where(Model.dataset_id == model.dataset_id, Model.id != model.id)
        .order_by(Model.id)
    ).all()
    linked: list[DeletionRequest] = []
    for other in others:
        version_id = _trains_on(session, other)
        if version_id is None:
            continue
        trained = _trained_on(session, version_id, sample_ids)
        covered = _covered(session, other.id, trained) if trained else set()
        held = [sid for sid in trained if sid not in covered]
        if not held:
            continue
        child = _linked_request(session, request, other, version_id, held)
        session.add(child)
        session.flush()
        session.add_all(DeletionTarget(request_id=child.id, sample_id=sid) for sid in held)
        events.record(session, child, "received", linked_to=request.id)
        linked.append(child)
    request.plan = {
        **request.plan,
        "linked_requests": [
            *request.plan.get("linked_requests", []),
            *({"request": c.id, "model": c.model_id} for c in linked),
        ],
    }
    session.flush()
    return linked


def linked_requests(session: Session, request: DeletionRequest) -> list[DeletionRequest]:
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.linked_to == request.id)
            .order_by(DeletionRequest.model_id)
        ).all()
    )


def follow(
    session: Session,
    request: DeletionRequest,
    kind: str,
    *,
    before: Sequence[str],
    after: str,
    reason: str | None,
) -> list[DeletionRequest]:
    """Move ``request``'s linked requests that are still in one of ``before`` the way it was
    moved (approved, denied, cancelled); returns those moved."""
    moved = []
    for child in linked_requests(session, request):
        result = session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == child.id, DeletionRequest.status.in_(before))
            .values(status=after, status_reason=reason)
            .execution_options(synchronize_session=False)
        )
        session.refresh(child)
        if result.rowcount:  # type: ignore[attr-defined]
            events.record(session, child, kind, linked_to=request.id)
            moved.append(child)
    return moved
