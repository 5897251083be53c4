"""The signed head of the audit-report chain: the service's word on where the chain ends."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.auth import ReadChainHead
from app.api.deps import SessionDep, SettingsDep
from app.api.schemas import ChainHead
from app.services.audit_chain import chain_head

router = APIRouter(tags=["audit"])


@router.get("/v1/audit-chain/head", responses={200: {"model": ChainHead}})
def read_audit_chain_head(
    session: SessionDep, settings: SettingsDep, caller: ReadChainHead
) -> JSONResponse:
    """The number of reports, the last one's sequence and sha256, signed with the report key.

    Fetch the head first and the chain (``GET /v1/audit-chain``) second, then
    ``forgetd verify-report chain.json --head head.json --public-key KEY``: a chain that stops
    before the head, or does not start at the genesis report, fails."""
    # Served as signed: the saved body verifies byte for byte as it came.
    return JSONResponse(chain_head(session, settings))
