"""GET /dashboard: a live page for compliance staff, server-rendered with Jinja2.

The page itself holds no data (it is public): it asks for an API key (auditor or above), keeps
it in the browser's sessionStorage only, and polls GET /dashboard/panel, which renders the
current state (counts, requests with overdue ones first, models) as an HTML fragment."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import case, func, select

from app.api.auth import OPERATOR, allow, public
from app.api.deps import SessionDep
from app.api.routers.deletions import deletion_out
from app.api.routers.models import model_out
from app.db.models import OPEN_REQUEST_STATES, DeletionRequest, Model, Role
from app.services import lifecycle
from app.services.api_keys import Principal

router = APIRouter(tags=["dashboard"], include_in_schema=False)
Staff = allow(OPERATOR, Role.AUDITOR)
SHOWN = 50
RECENT_EVENTS = 8


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("app.api", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )


@router.get("/dashboard", response_class=HTMLResponse, dependencies=[Depends(public)])
def dashboard() -> HTMLResponse:
    return HTMLResponse(_templates().get_template("dashboard.html").render())


def _requests(session: SessionDep) -> list[DeletionRequest]:
    """Overdue first, then open ones by deadline, then the most recently finished."""
    now = lifecycle.now()
    is_open = DeletionRequest.status.in_(OPEN_REQUEST_STATES)
    rank = case(
        (is_open & (DeletionRequest.due_at < now), 0),
        (is_open, 1),
        else_=2,
    )
    query = (
        select(DeletionRequest)
        .order_by(
            rank,
            case((is_open, DeletionRequest.due_at), else_=None).asc().nulls_last(),
            DeletionRequest.updated_at.desc(),
            DeletionRequest.id,
        )
        .limit(SHOWN)
    )
    return list(session.scalars(query).all())


def _model_rows(session: SessionDep) -> list[dict[str, Any]]:
    rows = []
    for model in session.scalars(select(Model).order_by(Model.id)).all():
        view = model_out(session, model)
        versions = [
            {
                "number": v["number"],
                "status": v["status"],
                "method": v["method"],
                "accuracy": ((v.get("metrics") or {}).get("test") or {}).get("accuracy"),
            }
            for v in view.versions
        ]
        rows.append({"model": view, "versions": versions})
    return rows


@router.get("/dashboard/panel", response_class=HTMLResponse)
def panel(session: SessionDep, caller: Principal = Depends(Staff)) -> HTMLResponse:
    counts = dict(
        session.execute(
            select(DeletionRequest.status, func.count()).group_by(DeletionRequest.status)
        ).all()
    )
    items: list[dict[str, Any]] = []
    for request in _requests(session):
        view = deletion_out(session, request, caller)
        timeline = lifecycle.timeline(session, request)[-RECENT_EVENTS:]
        items.append({"view": view, "events": timeline})
    html = (
        _templates()
        .get_template("dashboard_panel.html")
        .render(
            counts=counts,
            overdue=session.scalar(
                select(func.count())
                .select_from(DeletionRequest)
                .where(
                    DeletionRequest.status.in_(OPEN_REQUEST_STATES),
                    DeletionRequest.due_at < lifecycle.now(),
                )
            ),
            items=items,
            models=_model_rows(session),
            now=lifecycle.now(),
        )
    )
    return HTMLResponse(html)
