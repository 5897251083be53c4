"""Tables of the compliance workflow: each request's events, and the webhooks they feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models import Base, utcnow


class RequestEvent(Base):
    """One transition or step of a deletion request, in order (the id orders them)."""

    __tablename__ = "request_events"
    __table_args__ = (Index("ix_request_events_request", "request_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"))
    # received, pending_approval, approved, denied, queued, running, audited, files_erased,
    # completed, failed, cancelled, retried.
    kind: Mapped[str] = mapped_column(String(32))
    # The request's status right after this event.
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # Ids, counts, hashes and reasons; never file names.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryState:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Event types (`deletion_request.completed`, ...) or ["*"].
    events: Mapped[list[Any]] = mapped_column(JSON)
    # Standard Webhooks secret, `whsec_<base64>`; the worker needs it to sign, so it is kept.
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for one webhook: sent in event order per (webhook, request)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_deliveries_queue", "webhook_id", "request_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The webhook-id header: the same on every try, so a receiver can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("request_events.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
