"""Access policies: every route declares one, as a dependency, and the app refuses to start
with a route that has none.

``allow(*roles)`` admits a valid, unrevoked bearer key of one of the roles (admins always),
answers 401 with ``WWW-Authenticate: Bearer`` without one, and 403 for another role.
``public`` admits anyone (health, the signing key, the OpenAPI page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import BaseRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import SessionDep
from app.db.models import Role
from app.services.api_keys import Principal, authenticate
from app.services.errors import Forbidden, Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `forgetd keys create --role ROLE` or `POST /v1/api-keys`.",
)
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

# Every policy dependency, with the roles it admits (None: anyone, no key needed).
POLICIES: dict[Callable[..., object], frozenset[Role] | None] = {}


def public() -> None:
    """Open to anyone."""


POLICIES[public] = None


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting keys of ``roles`` (and admins); returns the caller."""
    admitted = frozenset(roles) | {Role.ADMIN}

    def policy(session: SessionDep, credentials: CredentialsDep) -> Principal:
        if credentials is None:
            raise Unauthorized("this endpoint needs an API key: Authorization: Bearer <key>")
        principal = authenticate(session, credentials.credentials)
        if principal is None:
            raise Unauthorized("the API key is unknown or revoked")
        if principal.role not in admitted:
            raise Forbidden(
                f"a {principal.role.value} key may not do this; it needs one of "
                f"{sorted(r.value for r in admitted)}"
            )
        return principal

    POLICIES[policy] = admitted
    return policy


REQUESTER, OPERATOR, AUDITOR = Role.REQUESTER, Role.OPERATOR, Role.AUDITOR
# The roles of each kind of work (admins are always admitted).
Operate = Annotated[Principal, Depends(allow(OPERATOR))]
SubmitRequests = Annotated[Principal, Depends(allow(REQUESTER))]
ReadRequests = Annotated[Principal, Depends(allow(REQUESTER, OPERATOR, AUDITOR))]
CancelRequests = Annotated[Principal, Depends(allow(REQUESTER, OPERATOR))]
Audit = Annotated[Principal, Depends(allow(AUDITOR))]
# The chain head holds no report content: operators may publish it as well as auditors check it.
ReadChainHead = Annotated[Principal, Depends(allow(OPERATOR, AUDITOR))]
AnyRole = Annotated[Principal, Depends(allow(REQUESTER, OPERATOR, AUDITOR))]
Administer = Annotated[Principal, Depends(allow())]


def _flat_routes(routes: list[BaseRoute]) -> Iterable[Any]:
    """Every route with its full path, included routers expanded (FastAPI keeps included
    routers as objects since it routes them lazily; older versions copied their routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return iter(routes)
    return iter_route_contexts(routes)


def _policy_calls(dependant: Dependant) -> Iterable[Callable[..., object]]:
    for sub in dependant.dependencies:
        if sub.call in POLICIES:
            assert sub.call is not None
            yield sub.call
        yield from _policy_calls(sub)


@dataclass(frozen=True)
class RoutePolicy:
    path: str
    methods: frozenset[str]
    admits: frozenset[Role] | None
    """The roles admitted (admins included); None for a public route."""


def route_policies(app: FastAPI) -> list[RoutePolicy]:
    """Every route of the app with the roles it admits. Raises for a route that declares no
    policy or several, and for a non-API route other than FastAPI's own documentation."""
    documentation = {app.openapi_url, app.docs_url, app.redoc_url}
    documentation.add(app.swagger_ui_oauth2_redirect_url)
    table = []
    for route in _flat_routes(app.routes):
        path, methods = str(route.path), frozenset(route.methods or ())
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            if path not in documentation:
                raise RuntimeError(f"route {path} is not an API route with an access policy")
            table.append(RoutePolicy(path, methods, None))
            continue
        calls = set(_policy_calls(dependant))
        if len(calls) != 1:
            raise RuntimeError(
                f"route {sorted(methods)} {path} must declare exactly one access policy "
                f"(app.api.auth.allow or public), it has {len(calls)}"
            )
        table.append(RoutePolicy(path, methods, POLICIES[calls.pop()]))
    return table
