"""API keys, for admins: create (the key is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.auth import Administer
from app.api.deps import SessionDep
from app.api.inputs import path_id
from app.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from app.db.models import ApiKey
from app.services import api_keys as service

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


def _out(row: ApiKey) -> ApiKeyOut:
    return ApiKeyOut.model_validate(row, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(
    body: ApiKeyCreate, session: SessionDep, response: Response, caller: Administer
) -> ApiKeyCreated:
    row, key = service.create_key(session, role=body.role, name=body.name)
    session.commit()
    response.headers["Location"] = f"/v1/api-keys/{row.id}"
    return ApiKeyCreated(**_out(row).model_dump(), key=key)


@router.get("", response_model=list[ApiKeyOut])
def list_api_keys(session: SessionDep, caller: Administer) -> list[ApiKeyOut]:
    return [_out(row) for row in service.list_keys(session)]


@router.delete("/{key_id}", response_model=ApiKeyOut)
def revoke_api_key(key_id: int, session: SessionDep, caller: Administer) -> ApiKeyOut:
    """Revoke a key: every later call with it gets 401. The record stays, for the audit."""
    row = service.revoke_key(session, path_id("API key", key_id))
    session.commit()
    return _out(row)
