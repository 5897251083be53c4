"""The audit-report chain's signed head (what ``GET /v1/audit-chain/head`` serves)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.head import seal_head
from app.db.models import AuditReport
from app.services.keys import signing_key
from app.settings import Settings


def chain_head(session: Session, settings: Settings) -> dict[str, Any]:
    """The number of reports and the last one's sequence and sha256, signed now."""
    total = select(func.count()).select_from(AuditReport).scalar_subquery()
    # One statement, so the count and the last report come from one snapshot.
    row = session.execute(
        select(AuditReport.sequence, AuditReport.sha256, total)
        .order_by(AuditReport.id.desc())
        .limit(1)
    ).first()
    count = int(row[2]) if row else 0
    return seal_head(
        count=count,
        # Reports are numbered from the migration that added numbers on, so a last report
        # without one can only come from a database built without it: its position is the count.
        sequence=(row[0] or count) if row else 0,
        sha256=row[1] if row else None,
        signed_at=datetime.now(UTC).replace(microsecond=0),
        key=signing_key(settings),
    )
