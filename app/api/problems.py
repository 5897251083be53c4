"""RFC 9457 problem+json responses for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.services.data_roots import clip
from app.services.errors import ServiceError

PROBLEM_JSON = "application/problem+json"
# At most this many validation errors are listed (one huge body can hold thousands).
MAX_ERRORS = 20
log = logging.getLogger(__name__)


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _short(value: Any) -> Any:
    """An echoed input as a short string (never NaN or infinity, which JSON cannot carry)."""
    if isinstance(value, bool | int) or value is None:
        return value if not isinstance(value, int) or abs(value) < 2**53 else clip(value, 40)
    return clip(value, 100)


def _clipped(errors: list[Any]) -> list[Any]:
    """Validation errors with every echoed input and message clipped."""
    shown = []
    for error in errors[:MAX_ERRORS]:
        if isinstance(error, dict):
            error = {key: _short(v) if key == "input" else v for key, v in error.items()}
            error.pop("ctx", None)  # its values may be any object; "msg" already says it
            if "msg" in error:
                error["msg"] = clip(error["msg"], 300)
        shown.append(error)
    return shown


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        extra = dict(exc.extra)
        if isinstance(extra.get("errors"), list):
            extra["errors"] = _clipped(extra["errors"])
        return problem(exc.status, exc.title, clip(exc.detail, 2000), exc.headers or None, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        errors = [
            {"field": clip(".".join(str(p) for p in e["loc"]), 200), "message": clip(e["msg"], 300)}
            for e in found[:MAX_ERRORS]
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        if len(found) > MAX_ERRORS:
            detail += f"; and {len(found) - MAX_ERRORS} more"
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "HTTP error", clip(exc.detail, 300))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the caller learns nothing of the internals.
        log.error("unhandled %s", type(exc).__name__)
        return problem(500, "Internal error", "the service failed; the error is logged")
