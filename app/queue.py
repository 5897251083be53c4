"""Enqueueing worker tasks by name, only ever after the database commit that they depend on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.broker import celery_app
from app.core.tasks import (
    TASK_DELIVER_WEBHOOK,
    TASK_PROCESS_MODEL,
    TASK_START_VERSION,
    TASK_TRAIN_FILTERS,
)
from app.db.models import DeletionRequest, RequestStatus

log = logging.getLogger(__name__)


def send(task_name: str, *args: Any) -> bool:
    """Send a task; a broker outage is logged, not raised (the periodic sweep re-sends)."""
    try:
        celery_app.send_task(task_name, args=list(args))
    except Exception as exc:  # kombu raises many transport-specific errors
        log.warning("could not enqueue %s%s: %s", task_name, args, exc)
        return False
    return True


def enqueue_version(version_id: int) -> bool:
    return send(TASK_START_VERSION, version_id)


def enqueue_filters(job_id: int) -> bool:
    """Train a model's weight filters (the sweep re-sends a job whose message was lost)."""
    return send(TASK_TRAIN_FILTERS, job_id)


def enqueue_webhook_delivery(webhook_id: int, request_id: str) -> bool:
    """Deliver the pending events of one request to one webhook, in order."""
    return send(TASK_DELIVER_WEBHOOK, webhook_id, request_id)


def enqueue_deletion(session: Session, request: DeletionRequest) -> bool:
    """Hand a committed request to the workers and mark it queued; True once marked. One that
    waits for an approval stays where it is.

    Never raises: the request is already stored, so its caller gets its 202 whatever happens
    here. A request left "received" (broker down, database busy) is re-sent by the sweep."""
    from app.services import events

    if request.status != RequestStatus.RECEIVED:
        return False
    if not send(TASK_PROCESS_MODEL, request.model_id):
        return False
    try:
        marked = session.execute(
            update(DeletionRequest)
            .where(
                DeletionRequest.id == request.id,
                DeletionRequest.status == RequestStatus.RECEIVED,
            )
            .values(status=RequestStatus.QUEUED, enqueued_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount:  # type: ignore[attr-defined]
            session.refresh(request)
            events.record(session, request, "queued")
        session.commit()
    except Exception as exc:  # any database error: the sweep marks and re-sends it later
        log.warning("request %s stays received: %s", request.id, type(exc).__name__)
        session.rollback()
        return False
    return bool(marked.rowcount)  # type: ignore[attr-defined]
