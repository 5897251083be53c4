"""Webhook subscriptions: checked URLs (only allowed hosts), Standard Webhooks secrets, and
the record of every delivery (the worker sends them: worker.webhooks)."""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.workflow import DeliveryState, Webhook, WebhookDelivery
from app.services import events
from app.services.errors import InvalidInput, NotFound

SECRET_PREFIX = "whsec_"


def check_url(url: str, allowed_hosts: list[str]) -> str:
    """An http(s) URL to a host on FORGETD_WEBHOOK_ALLOWED_HOSTS (host or host:port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host", field="url")
    if parts.username or parts.password:
        raise InvalidInput("url must not carry credentials", field="url")
    host = parts.hostname.lower()
    allowed = {h.lower() for h in allowed_hosts}
    if host not in allowed and f"{host}:{port}" not in allowed:
        raise InvalidInput(
            f"url host {host!r} is not in FORGETD_WEBHOOK_ALLOWED_HOSTS"
            + ("" if allowed else " (empty: no webhook host is allowed)"),
            field="url",
        )
    return url


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def delivery_address(url: str, allowed_hosts: list[str], *, allow_private: bool) -> str:
    """The IP address a delivery to ``url`` connects to, checked at the time of sending.

    An IP literal on the allowed list is used as named. A host name is resolved now, and every
    address it resolves to must be public (not loopback, private, link-local, reserved...)
    unless ``allow_private``: otherwise a name allowed once could be re-pointed at an internal
    address later (DNS rebinding). The caller connects to the returned address, not the name."""
    check_url(url, allowed_hosts)
    parts = urlsplit(url)
    host = str(parts.hostname)
    try:
        return str(_address(host))
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidInput(f"url host {host!r} does not resolve", field="url") from None
    addresses = [_address(str(info[4][0])) for info in infos]
    if not addresses:
        raise InvalidInput(f"url host {host!r} does not resolve", field="url")
    internal = sorted({str(a) for a in addresses if not a.is_global})
    if internal and not allow_private:
        raise InvalidInput(
            f"url host {host!r} resolves to non-public address(es) {internal[:5]}; name the "
            "address itself in FORGETD_WEBHOOK_ALLOWED_HOSTS or set "
            "FORGETD_WEBHOOK_ALLOW_PRIVATE_ADDRESSES to allow it",
            field="url",
        )
    return str(addresses[0])


def check_secret(secret: str | None) -> str:
    if secret is None:
        return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise InvalidInput("secret must be whsec_ followed by base64", field="secret") from None
    if not 24 <= len(raw) <= 64:
        raise InvalidInput("secret must encode 24 to 64 bytes", field="secret")
    return secret if secret.startswith(SECRET_PREFIX) else SECRET_PREFIX + secret


def create_webhook(
    session: Session, *, url: str, event_types: list[str], secret: str | None, allowed: list[str]
) -> Webhook:
    unknown = sorted(set(event_types) - set(events.EVENT_TYPES) - {"*"})
    if unknown:
        raise InvalidInput(
            f"unknown event types {unknown[:10]}; use '*' or any of {list(events.EVENT_TYPES)}",
            field="events",
        )
    hook = Webhook(
        url=check_url(url, allowed),
        events=sorted(set(event_types)),
        secret=check_secret(secret),
        created_at=datetime.now(UTC),
    )
    session.add(hook)
    session.flush()
    return hook


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.deleted_at is not None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return hook


def list_webhooks(session: Session) -> list[Webhook]:
    return list(
        session.scalars(
            select(Webhook).where(Webhook.deleted_at.is_(None)).order_by(Webhook.id)
        ).all()
    )


def delete_webhook(session: Session, webhook_id: int) -> Webhook:
    """Stop sending to it (its delivery record stays)."""
    hook = get_webhook(session, webhook_id)
    hook.deleted_at = datetime.now(UTC)
    return hook


def list_deliveries(
    session: Session, webhook_id: int, *, limit: int, offset: int
) -> list[WebhookDelivery]:
    get_webhook(session, webhook_id)
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.id)
            .limit(limit)
            .offset(offset)
        ).all()
    )


def redeliver(session: Session, webhook_id: int, delivery_id: int) -> WebhookDelivery:
    """Send a delivery again (same webhook-id, so receivers can drop a duplicate)."""
    get_webhook(session, webhook_id)
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} does not exist")
    delivery.state = DeliveryState.PENDING
    delivery.tries = 0
    delivery.next_try_at = None
    events.schedule(session, webhook_id, delivery.request_id)
    return delivery
