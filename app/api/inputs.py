"""Input shapes every route shares, so that nothing a caller sends reaches the database or the
file system in a form they cannot hold: ids within the integer columns, no NUL bytes (PostgreSQL
text cannot store one), server paths within the OS limits, and no unbounded echo."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem
from app.services.errors import NotFound

# Ids are INTEGER columns (32-bit on PostgreSQL); larger numbers name nothing.
MAX_ID = 2**31 - 1
# Paging offsets beyond this would only ever return empty pages.
MAX_OFFSET = 10**9
# Linux limits: a path of PATH_MAX bytes with its terminating NUL, components of NAME_MAX bytes.
PATH_MAX = 4095
NAME_MAX = 255


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


def _server_path(value: str) -> str:
    _no_nul(value)
    if len(value.encode()) > PATH_MAX:
        raise ValueError(f"is longer than {PATH_MAX} bytes")
    if any(len(part.encode()) > NAME_MAX for part in value.split("/")):
        raise ValueError(f"has a path component longer than {NAME_MAX} bytes")
    return value


def _ref_text(value: str) -> str:
    _no_nul(value)
    if value.isdigit() and not (value.isascii() and 1 <= int(value) <= MAX_ID):
        raise ValueError(f"is not an id (ids are 1 to {MAX_ID})")
    return value


def _nul_free_tree(value: Any) -> Any:
    """Refuses NUL bytes in any key or string of a JSON value (method configurations)."""
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _nul_free_tree(item)
    elif isinstance(value, list):
        for item in value:
            _nul_free_tree(item)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
ShortText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
ShortName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]
# Empty or malformed names are listed by the resolution, with every other refused name.
FileName = Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)]
ServerPath = Annotated[str, Field(min_length=1, max_length=PATH_MAX), AfterValidator(_server_path)]
# An id or a name; bounded, so that no error ever echoes a long input back.
Ref = (
    Annotated[int, Field(ge=1, le=MAX_ID)]
    | Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_ref_text)]
)
NulFreeJson = AfterValidator(_nul_free_tree)


def path_ref(kind: str, ref: str) -> str:
    """A path or query id-or-name; digits that cannot be an id name nothing (404)."""
    try:
        return _ref_text(ref)
    except ValueError:
        raise NotFound(f"{kind} {ref[:200]!r} does not exist") from None


def path_id(kind: str, value: int) -> int:
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"{kind} {value} does not exist")
    return value


class RefuseNulInUrl:
    """ASGI middleware: a NUL byte in the path or the query string is a 422, before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            where = (
                "path"
                if "\x00" in scope.get("path", "")
                else "query"
                if b"%00" in query or b"\x00" in query
                else None
            )
            if where:
                detail = f"{where}: must not contain NUL bytes"
                errors = [{"field": where, "message": "must not contain NUL bytes"}]
                await problem(422, "Invalid request", detail, errors=errors)(scope, receive, send)
                return
        await self.app(scope, receive, send)
