"""The deployment's audit-report hash chain, for offline verification of many reports at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from app.api.auth import Audit
from app.api.deps import SessionDep
from app.api.inputs import MAX_OFFSET
from app.db.models import AuditReport

router = APIRouter(tags=["audit"])


@router.get("/v1/audit-chain", responses={200: {"content": {"application/json": {}}}})
def read_audit_chain(
    session: SessionDep,
    caller: Audit,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="reports to skip from the oldest")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Signed report envelopes in chain order, oldest first: save the body and check it with
    ``forgetd verify-report FILE --public-key KEY`` (signatures and links, offline)."""
    envelopes = session.scalars(
        select(AuditReport.envelope).order_by(AuditReport.id).offset(offset).limit(limit)
    ).all()
    total = session.scalar(select(func.count()).select_from(AuditReport)) or 0
    # The body is exactly the list, so the saved file verifies as it is; paging goes in headers.
    return JSONResponse(
        list(envelopes),
        headers={"X-Total-Count": str(total), "X-Offset": str(offset), "X-Limit": str(limit)},
    )
