"""The deployment's report-signing key (created on first use, owner-only)."""

from __future__ import annotations

from typing import Any

from app.audit.integrity import SigningKey
from app.settings import Settings


def signing_key(settings: Settings) -> SigningKey:
    assert settings.signing_key_path is not None
    return SigningKey.load_or_create(settings.signing_key_path)


def public_key_view(settings: Settings) -> dict[str, Any]:
    key = signing_key(settings)
    return {"key_id": key.key_id(), "algorithm": "Ed25519", "public_key_pem": key.public_pem()}
