"""At most ``FORGETD_API_THREADS`` requests in progress per process.

Each request in progress may hold one database connection (its session) and needs one thread at
a time; the pool is larger than this limit (see the settings). Without the limit, a burst lets
more requests take connections than the pool has, and the threads of the others wait out the
pool timeout: a 500 for a call that may already have stored its request. Requests beyond the
limit wait here, holding nothing."""

from __future__ import annotations

import anyio
from anyio.lowlevel import RunVar
from starlette.types import ASGIApp, Receive, Scope, Send

# One limiter per event loop (a test client may run each call in a loop of its own).
_SLOTS: RunVar[anyio.CapacityLimiter] = RunVar("forgetd_admission_slots")


class AdmissionLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            slots = _SLOTS.get()
        except LookupError:
            slots = anyio.CapacityLimiter(self.limit)
            _SLOTS.set(slots)
        async with slots:
            await self.app(scope, receive, send)
