"""The signed head of the audit-report chain: the service's word on where the chain ends."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from app.api.auth import ReadChainHead
from app.api.deps import SessionDep, SettingsDep
from app.api.schemas import ChainHead
from app.audit.head import seal_head
from app.db.models import AuditReport
from app.services.keys import signing_key

router = APIRouter(tags=["audit"])


@router.get("/v1/audit-chain/head", responses={200: {"model": ChainHead}})
def read_audit_chain_head(
    session: SessionDep, settings: SettingsDep, caller: ReadChainHead
) -> JSONResponse:
    """The number of reports, the last one's sequence and sha256, signed with the report key.

    Fetch the head first and the chain (``GET /v1/audit-chain``) second, then
    ``forgetd verify-report chain.json --head head.json --public-key KEY``: a chain that stops
    before the head, or does not start at the genesis report, fails."""
    total = select(func.count()).select_from(AuditReport).scalar_subquery()
    # One statement, so the count and the last report come from one snapshot.
    row = session.execute(
        select(AuditReport.sequence, AuditReport.sha256, total)
        .order_by(AuditReport.id.desc())
        .limit(1)
    ).first()
    count = int(row[2]) if row else 0
    head = seal_head(
        count=count,
        sequence=(row[0] or count) if row else 0,
        sha256=row[1] if row else None,
        signed_at=datetime.now(UTC).replace(microsecond=0),
        key=signing_key(settings),
    )
    return JSONResponse(head)
