"""Sending webhook deliveries: Standard Webhooks signatures, one request's events in order,
exponential back-off between tries and a bounded number of them.

A delivery is claimed with a conditional UPDATE (its next_try_at moves a lease ahead), so two
tasks for the same (webhook, request) never send at once; a task that dies leaves the lease to
run out, and the sweep sends the pair again (`due_pairs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import func, or_, select, update
from standardwebhooks import Webhook as Signer

from app.db.models import as_utc
from app.db.session import session_scope
from app.db.workflow import DeliveryState, Webhook, WebhookDelivery
from app.services.errors import InvalidInput
from app.services.webhooks import delivery_address
from app.settings import get_settings
from worker.flows.common import log

LEASE = timedelta(seconds=60)
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None


def now() -> datetime:
    return datetime.now(UTC)


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, at, body),
    }


def _pinned(url: str, address: str) -> tuple[str, dict[str, str]]:
    """``url`` aimed at the checked ``address`` (so a second DNS answer cannot differ), with the
    name kept for TLS: the certificate is verified against the host the URL names."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": str(parts.hostname)} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), extensions


def post(url: str, secret: str, message_id: str, payload: dict) -> Outcome:
    """One signed POST; any 2xx is a success. Redirects are not followed (they could lead
    to a host that is not allowed)."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    settings = get_settings()
    try:
        address = delivery_address(
            url,
            settings.webhook_allowed_hosts,
            allow_private=settings.webhook_allow_private_addresses,
        )
        pinned, extensions = _pinned(url, address)
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as client:
            request = client.build_request(
                "POST",
                pinned,
                content=body.encode(),
                headers={
                    **signed_headers(secret, message_id, body, now()),
                    "host": str(urlsplit(url).netloc),
                },
                extensions=extensions,
            )
            response = client.send(request)
    except InvalidInput as exc:
        return Outcome(False, None, exc.detail)
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {str(exc)[:300]}")
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code, None)
    return Outcome(False, response.status_code, f"HTTP {response.status_code}")


def _claim_next(webhook_id: int, request_id: str) -> tuple[int, str, str, dict] | float | None:
    """The oldest pending delivery of the pair, claimed; or seconds until it is due; or None."""
    with session_scope() as session:
        hook = session.get(Webhook, webhook_id)
        if hook is None or hook.deleted_at is not None:
            return None
        delivery = session.scalar(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == webhook_id,
                WebhookDelivery.request_id == request_id,
                WebhookDelivery.state == DeliveryState.PENDING,
            )
            .order_by(WebhookDelivery.id)
            .limit(1)
        )
        if delivery is None:
            return None
        moment = now()
        if delivery.next_try_at is not None and as_utc(delivery.next_try_at) > moment:
            return (as_utc(delivery.next_try_at) - moment).total_seconds()
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.state == DeliveryState.PENDING,
                or_(
                    WebhookDelivery.next_try_at.is_(None),
                    WebhookDelivery.next_try_at <= moment,
                ),
            )
            .values(next_try_at=moment + LEASE)
            .execution_options(synchronize_session=False)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            return None  # another task holds it
        return delivery.id, hook.url, hook.secret, delivery.payload


def _settle(delivery_id: int, outcome: Outcome) -> float | None:
    """Record a try; returns the back-off before the next one (None: go on to the next)."""
    settings = get_settings()
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        delivery.tries += 1
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        if outcome.ok:
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = now()
            delivery.next_try_at = None
            return None
        if delivery.tries >= settings.webhook_max_tries:
            log.warning("webhook delivery %s given up after %s tries", delivery.id, delivery.tries)
            delivery.state = DeliveryState.FAILED
            delivery.next_try_at = None
            return None
        backoff = settings.webhook_backoff_s * 2 ** (delivery.tries - 1)
        delivery.next_try_at = now() + timedelta(seconds=backoff)
        return backoff


def deliver_pending(webhook_id: int, request_id: str) -> float | None:
    """Send the pair's pending deliveries in order until one fails. Returns the seconds to
    wait before trying again, or None when nothing is left to do here."""
    while True:
        claimed = _claim_next(webhook_id, request_id)
        if claimed is None or isinstance(claimed, float):
            return claimed
        delivery_id, url, secret, payload = claimed
        with session_scope() as session:
            message_id = session.get(WebhookDelivery, delivery_id).message_id  # type: ignore[union-attr]
        backoff = _settle(delivery_id, post(url, secret, message_id, payload))
        if backoff is not None:
            return backoff


def due_pairs(limit: int = 500) -> list[tuple[int, str]]:
    """(webhook, request) pairs whose oldest pending delivery is due (for the sweep)."""
    with session_scope() as session:
        heads = (
            select(func.min(WebhookDelivery.id))
            .where(WebhookDelivery.state == DeliveryState.PENDING)
            .group_by(WebhookDelivery.webhook_id, WebhookDelivery.request_id)
        )
        rows = session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.request_id)
            .where(
                WebhookDelivery.id.in_(heads),
                or_(
                    WebhookDelivery.next_try_at.is_(None),
                    WebhookDelivery.next_try_at <= now(),
                ),
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
        ).all()
    return [(int(w), str(r)) for w, r in rows]
