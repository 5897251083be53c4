"""API keys: random bearer tokens with a role, stored only as their sha256.

A key is ``fgd_`` followed by 32 random bytes (URL-safe base64). Looking a key up by its
hash and comparing the digests with ``hmac.compare_digest`` keeps the check constant-time in
the secret; the key itself is shown once, when it is created, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import ApiKey, DeletionRequest, Role
from app.services.errors import InvalidInput, NotFound

KEY_PREFIX = "fgd_"
KEY_BYTES = 32
MAX_KEY_LENGTH = 200
# Recording every use would turn every read into a write; a minute's precision is enough.
LAST_USE_PRECISION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and role (never the key itself)."""

    key_id: int
    name: str
    role: Role

    def may_see_external_id(self, request: DeletionRequest) -> bool:
        return self.role != Role.REQUESTER or request.owner_key_id == self.key_id


def owner_scope(caller: Principal) -> int | None:
    """The owner a caller's view of deletion requests is limited to (None: every request)."""
    return caller.key_id if caller.role == Role.REQUESTER else None


def idempotency_token(caller: Principal, header: str | None) -> str | None:
    """What is stored for an Idempotency-Key: a hash scoped to the caller's key, so a key
    never returns another caller's request and the header itself (often a ticket id) is not
    kept."""
    if not header:
        return None
    return hashlib.sha256(f"{caller.key_id}:{header}".encode()).hexdigest()


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput(
            f"unknown role {text[:40]!r}; one of {[r.value for r in Role]}"
        ) from None


def create_key(session: Session, *, role: Role, name: str) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the key (the only time it is available)."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    row = ApiKey(name=name, role=role.value, key_sha256=key_digest(key), prefix=key[:10])
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)).all())


def revoke_key(session: Session, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row


def authenticate(session: Session, key: str) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
        return None
    digest = key_digest(key)
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == digest))
    if row is None or not hmac.compare_digest(row.key_sha256, digest) or row.revoked_at:
        return None
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite returns naive datetimes
        last = last.replace(tzinfo=UTC)
    if last is None or now - last > LAST_USE_PRECISION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
    return Principal(key_id=row.id, name=row.name, role=Role(row.role))
