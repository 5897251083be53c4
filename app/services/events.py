"""Each request's events: every transition and step is recorded here, in order, and fans out
to the subscribed webhooks (their deliveries are sent only after the commit that stores them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.db.models import AuditReport, DeletionRequest
from app.db.workflow import RequestEvent, Webhook, WebhookDelivery

EVENT_PREFIX = "deletion_request."
EVENT_KINDS = (
    "received",
    "pending_approval",
    "approved",
    "denied",
    "queued",
    "running",
    "audited",
    "files_held",
    "files_erased",
    "completed",
    "failed",
    "cancelled",
    "retried",
)
EVENT_TYPES = tuple(EVENT_PREFIX + kind for kind in EVENT_KINDS)
_PENDING_SENDS = "forgetd_webhook_sends"


def record(
    session: Session,
    request: DeletionRequest,
    kind: str,
    *,
    status: str | None = None,
    **detail: Any,
) -> RequestEvent:
    """Store one event of ``request`` (status: the request's status after it)."""
    assert kind in EVENT_KINDS, kind
    row = RequestEvent(
        request_id=request.id,
        kind=kind,
        status=str(status or request.status),
        attempt=request.attempt or 1,
        detail=detail,
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    _fan_out(session, request, row)
    return row


def payload(request: DeletionRequest, row: RequestEvent) -> dict[str, Any]:
    """What a webhook receives: ids, status and hashes, never file names or external ids."""
    return {
        "type": EVENT_PREFIX + row.kind,
        "timestamp": _iso(row.created_at),
        "data": {
            "request_id": request.id,
            "model_id": request.model_id,
            "event_id": row.id,
            "event": row.kind,
            "status": row.status,
            "attempt": row.attempt,
            "detail": row.detail,
            "report_url": f"/v1/deletion-requests/{request.id}/report"
            if row.kind == "completed"
            else None,
        },
    }


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _fan_out(session: Session, request: DeletionRequest, row: RequestEvent) -> None:
    event_type = EVENT_PREFIX + row.kind
    hooks = session.scalars(select(Webhook).where(Webhook.deleted_at.is_(None))).all()
    body = payload(request, row)
    for hook in hooks:
        if "*" not in hook.events and event_type not in hook.events:
            continue
        session.add(
            WebhookDelivery(
                message_id=f"msg_{uuid.uuid4().hex}",
                webhook_id=hook.id,
                event_id=row.id,
                request_id=request.id,
                event_type=event_type,
                payload=body,
            )
        )
        session.info.setdefault(_PENDING_SENDS, set()).add((hook.id, request.id))


def schedule(session: Session, webhook_id: int, request_id: str) -> None:
    """Send the delivery task for (webhook, request) after the current transaction commits."""
    session.info.setdefault(_PENDING_SENDS, set()).add((webhook_id, request_id))


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    sends = session.info.pop(_PENDING_SENDS, None)
    if not sends:
        return
    from app.queue import enqueue_webhook_delivery

    for webhook_id, request_id in sorted(sends):
        enqueue_webhook_delivery(webhook_id, request_id)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING_SENDS, None)


def list_events(session: Session, request_id: str) -> list[RequestEvent]:
    return list(
        session.scalars(
            select(RequestEvent)
            .where(RequestEvent.request_id == request_id)
            .order_by(RequestEvent.id)
        ).all()
    )


def report_sha256(session: Session, request_id: str) -> str | None:
    return session.scalar(select(AuditReport.sha256).where(AuditReport.request_id == request_id))
