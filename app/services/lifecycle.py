"""The lifecycle around each deletion request: approval, deadline, duplicates, retries and
the timeline of its events. Each transition is a conditional UPDATE, so two operators (or an
operator and a worker) cannot both move one request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import (
    OPEN_REQUEST_STATES,
    DeletionRequest,
    Model,
    ModelVersion,
    RequestStatus,
    ShardStatus,
    VersionShard,
    as_utc,
)
from app.services import events, shared_erasure
from app.services.api_keys import Principal
from app.services.errors import Conflict, InvalidInput

MAX_DEADLINE_DAYS = 365
FINAL_STATES = (
    RequestStatus.COMPLETED,
    RequestStatus.CANCELLED,
    RequestStatus.DENIED,
    RequestStatus.REJECTED,
)


def now() -> datetime:
    return datetime.now(UTC)


def is_overdue(request: DeletionRequest, at: datetime | None = None) -> bool:
    """Open (not completed, failed or closed) past its deadline."""
    if request.due_at is None or request.status not in OPEN_REQUEST_STATES:
        return False
    return as_utc(request.due_at) < (at or now())


def admit_new_request(
    session: Session,
    request: DeletionRequest,
    *,
    deadline_days: int | None,
    default_days: int,
) -> None:
    """After a new request is stored (before the commit): set its deadline, hold it for
    approval where the model asks, and record its first events. (A duplicate external_id was
    refused when it was stored: see duplicate_conflict.)"""
    days = deadline_days if deadline_days is not None else default_days
    if not 1 <= days <= MAX_DEADLINE_DAYS:
        raise InvalidInput(f"deadline_days must be between 1 and {MAX_DEADLINE_DAYS}, got {days}")
    request.due_at = as_utc(request.created_at or now()) + timedelta(days=days)
    request.attempt = 1
    events.record(session, request, "received", status=RequestStatus.RECEIVED, due_in_days=days)
    model = session.get(Model, request.model_id)
    if model is not None and model.require_approval:
        request.status = RequestStatus.PENDING_APPROVAL
        request.status_reason = "waits for an operator's approval"
        events.record(session, request, "pending_approval")
    session.flush()


def duplicate_conflict(session: Session, request: DeletionRequest) -> Conflict | None:
    """The 409 for a request whose external_id names an open request of the same model, from
    any caller (the unique index on open (model, external_id) refused the insert); None when
    that is not why it was refused. Only the caller that owns the open request learns its id."""
    if not request.external_id:
        return None
    duplicate = session.execute(
        select(DeletionRequest.id, DeletionRequest.owner_key_id)
        .where(
            DeletionRequest.model_id == request.model_id,
            DeletionRequest.external_id == request.external_id,
            DeletionRequest.status.in_(OPEN_REQUEST_STATES),
        )
        .limit(1)
    ).first()
    if duplicate is None:
        return None
    if duplicate.owner_key_id == request.owner_key_id:
        return Conflict(
            f"external_id already names open request {duplicate.id} of this model",
            existing_request_id=duplicate.id,
        )
    return Conflict("external_id already names an open request of this model (another caller's)")


def _move(
    session: Session,
    request: DeletionRequest,
    allowed: tuple[str, ...],
    action: str,
    **values: Any,
) -> None:
    result = session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.id == request.id, DeletionRequest.status.in_(allowed))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(request)
    if not result.rowcount:  # type: ignore[attr-defined]
        states = " or ".join(allowed)
        raise Conflict(f"cannot {action} a request that is {request.status}; it must be {states}")


def approve(session: Session, request: DeletionRequest, caller: Principal, reason: str) -> None:
    _move(
        session,
        request,
        (RequestStatus.PENDING_APPROVAL,),
        "approve",
        status=RequestStatus.RECEIVED,
        status_reason=None,
    )
    events.record(session, request, "approved", by=caller.name, key_id=caller.key_id, reason=reason)
    shared_erasure.follow(
        session,
        request,
        "approved",
        before=(RequestStatus.PENDING_APPROVAL,),
        after=RequestStatus.RECEIVED,
        reason=None,
    )


def deny(session: Session, request: DeletionRequest, caller: Principal, reason: str) -> None:
    """Final: the request keeps the reason and never runs. A linked request is denied only
    with the request it serves (denied alone, it would keep that request's files forever)."""
    if request.linked_to is not None:
        raise Conflict(
            f"this request erases the data of request {request.linked_to} from another model; "
            "deny that request instead"
        )
    _move(
        session,
        request,
        (RequestStatus.PENDING_APPROVAL,),
        "deny",
        status=RequestStatus.DENIED,
        status_reason=f"denied: {reason}",
        completed_at=now(),
    )
    events.record(session, request, "denied", by=caller.name, key_id=caller.key_id, reason=reason)
    shared_erasure.follow(
        session,
        request,
        "denied",
        before=(RequestStatus.PENDING_APPROVAL,),
        after=RequestStatus.DENIED,
        reason=f"denied with request {request.id}: {reason}",
    )


def retry(session: Session, request: DeletionRequest, caller: Principal) -> None:
    """A new attempt of a failed request under the same id (the failed one stays on record)."""
    previous_reason, attempt = request.status_reason, request.attempt or 1
    try:
        with session.begin_nested():  # reopening it may meet an open twin's external_id
            _move(
                session,
                request,
                (RequestStatus.FAILED,),
                "retry",
                status=RequestStatus.RECEIVED,
                status_reason=None,
                attempt=attempt + 1,
                result_version_id=None,
                batch_id=None,
                enqueued_at=None,
                completed_at=None,
                timings={},
            )
    except IntegrityError:
        raise duplicate_conflict(session, request) or Conflict(
            "cannot retry: the request conflicts with an open one"
        ) from None
    events.record(
        session,
        request,
        "retried",
        by=caller.name,
        key_id=caller.key_id,
        previous_attempt=attempt,
        previous_reason=previous_reason,
    )


def attempts(session: Session, request: DeletionRequest) -> list[dict[str, Any]]:
    """Each attempt with its start, end, outcome and reason (from the recorded events)."""
    found: dict[int, dict[str, Any]] = {}
    for row in events.list_events(session, request.id):
        entry = found.setdefault(
            row.attempt,
            {"attempt": row.attempt, "started_at": row.created_at, "ended_at": None},
        )
        entry["status"] = row.status
        if row.kind in ("completed", "failed", "cancelled", "denied"):
            entry["ended_at"] = row.created_at
            entry["reason"] = row.detail.get("reason")
    return [found[n] for n in sorted(found)]


def timeline(session: Session, request: DeletionRequest) -> list[dict[str, Any]]:
    """Recorded events plus the retrain steps of the current attempt (shard k retrained),
    read from the version's shard records, in time order."""
    items: list[dict[str, Any]] = [
        {
            "id": row.id,
            "kind": row.kind,
            "status": row.status,
            "attempt": row.attempt,
            "detail": row.detail,
            "at": as_utc(row.created_at),
        }
        for row in events.list_events(session, request.id)
    ]
    if request.result_version_id is not None:
        version = session.get(ModelVersion, request.result_version_id)
        slices = int(request.plan.get("slices", 1))
        shards = session.scalars(
            select(VersionShard).where(
                VersionShard.version_id == request.result_version_id,
                VersionShard.status == ShardStatus.DONE,
                VersionShard.restart_slice < slices,
            )
        ).all()
        for shard in shards:
            items.append(
                {
                    "id": None,
                    "kind": "shard_retrained",
                    "status": RequestStatus.RUNNING.value,
                    "attempt": request.attempt,
                    "detail": {
                        "shard": shard.shard,
                        "from_slice": shard.restart_slice,
                        "version": version.number if version else None,
                        "samples_trained": shard.samples_trained,
                    },
                    "at": as_utc(shard.updated_at),
                }
            )
    items.sort(key=lambda item: (item["at"], item["id"] is not None, item["id"] or 0))
    return items


def filter_and_sort(query: Select[Any], *, overdue: bool | None, sort: str | None) -> Select[Any]:
    """The list's lifecycle options: ``overdue`` (open past due_at) and ``sort=due_at``."""
    if overdue is not None:
        late = DeletionRequest.status.in_(OPEN_REQUEST_STATES) & (DeletionRequest.due_at < now())
        on_time = or_(
            DeletionRequest.status.not_in(OPEN_REQUEST_STATES),
            DeletionRequest.due_at.is_(None),
            DeletionRequest.due_at >= now(),
        )
        query = query.where(late if overdue else on_time)
    if sort in (None, "", "-created_at"):
        return query.order_by(DeletionRequest.created_at.desc(), DeletionRequest.id)
    if sort == "due_at":
        return query.order_by(DeletionRequest.due_at.asc().nulls_last(), DeletionRequest.id)
    if sort == "-due_at":
        return query.order_by(DeletionRequest.due_at.desc().nulls_last(), DeletionRequest.id)
    if sort == "created_at":
        return query.order_by(DeletionRequest.created_at.asc(), DeletionRequest.id)
    raise InvalidInput(
        f"sort must be one of due_at, -due_at, created_at, -created_at; got {sort!r}"
    )


def public_fields(session: Session, request: DeletionRequest) -> dict[str, Any]:
    """The lifecycle fields of a request's HTTP view."""
    return {
        "due_at": as_utc(request.due_at) if request.due_at else None,
        "overdue": is_overdue(request),
        "attempt": request.attempt or 1,
        "attempts": attempts(session, request),
    }
