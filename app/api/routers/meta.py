"""Methods, keys, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.auth import AnyRole, Audit, public
from app.api.deps import SessionDep, SettingsDep
from app.core.methods import all_methods, measured
from app.services.keys import public_key_view

router = APIRouter(tags=["service"])


@router.get("/v1/methods")
def list_methods(caller: AnyRole, settings: SettingsDep) -> dict[str, Any]:
    return {
        "methods": [
            {**spec.describe(), "measured_file_forgetting": measured.file_forgetting(spec.name)}
            for spec in all_methods()
        ],
        "choosing": measured.choosing(settings.default_class_method),
    }


@router.get("/v1/keys", dependencies=[Depends(public)])
def list_keys(settings: SettingsDep) -> dict[str, Any]:
    return {"keys": [public_key_view(settings)]}


@router.get("/healthz", dependencies=[Depends(public)])
def health(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def metrics(caller: Audit) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
