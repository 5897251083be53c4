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
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    RequestStatus,
)
from app.services import events
from app.services.versions import load_placements
from app.sisa.planner import plan_deletion

LINKED_METHOD = "sisa"


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


def _linked_request(
    session: Session, request: DeletionRequest, other: Model, held: list[int]
) -> DeletionRequest:
    version = session.get(ModelVersion, other.current_version_id)
    assert version is not None
    plan = plan_deletion(
        load_placements(session, version.id),
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
        status=request.status,
        status_reason=f"waits for the approval of request {request.id}" if waiting else None,
        plan={
            **plan.to_dict(),
            "samples": len(held),
            "exact": True,
            "identical_copies": [],
            "linked_to": request.id,
        },
        base_version_id=version.id,
        due_at=request.due_at,
        attempt=1,
    )


def link_other_models(session: Session, request: DeletionRequest) -> list[DeletionRequest]:
    """Create a linked request on every other model of the dataset whose current version
    trained on one of ``request``'s samples; lists them in ``request.plan.linked_requests``."""
    model = session.get(Model, request.model_id)
    assert model is not None
    session.flush()
    targets = session.scalars(
        select(DeletionTarget.sample_id).where(DeletionTarget.request_id == request.id)
    ).all()
    others = session.scalars(
        select(Model)
        .where(
            Model.dataset_id == model.dataset_id,
            Model.id != model.id,
            Model.current_version_id.is_not(None),
        )
        .order_by(Model.id)
    ).all()
    linked: list[DeletionRequest] = []
    for other in others:
        assert other.current_version_id is not None
        held = _trained_on(session, other.current_version_id, targets)
        if not held:
            continue
        child = _linked_request(session, request, other, held)
        session.add(child)
        session.flush()
        session.add_all(DeletionTarget(request_id=child.id, sample_id=sid) for sid in held)
        events.record(session, child, "received", linked_to=request.id)
        linked.append(child)
    request.plan = {
        **request.plan,
        "linked_requests": [{"request": c.id, "model": c.model_id} for c in linked],
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
