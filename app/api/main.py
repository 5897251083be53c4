"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import anyio.to_thread
from fastapi import FastAPI

from app.api.admission import AdmissionLimit
from app.api.auth import route_policies
from app.api.inputs import RefuseNulInUrl
from app.api.openapi import install_openapi
from app.api.problems import install_problem_handlers
from app.api.routers import (
    api_keys,
    audit,
    audit_chain,
    backbones,
    dashboard,
    datasets,
    deletions,
    filters,
    imports,
    meta,
    models,
    webhooks,
    workflow,
)
from app.services.keys import signing_key
from app.settings import get_settings


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    settings.ensure_folders()
    # One thread for each request admitted at once (AdmissionLimit); the pool serves them all.
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    signing_key(settings)  # created on first start, so GET /v1/keys never races to create it
    yield


def create_app() -> FastAPI:
    logging.basicConfig(level=get_settings().log_level)
    app = FastAPI(
        title="forgetd",
        version="0.1.0",
        summary="Right-to-be-forgotten deletion requests on trained image classifiers",
        lifespan=_lifespan,
    )
    install_problem_handlers(app)
    app.add_middleware(RefuseNulInUrl)
    app.add_middleware(AdmissionLimit, limit=get_settings().api_threads)
    routers: tuple[ModuleType, ...] = (
        datasets,
        backbones,
        imports,
        models,
        deletions,
        audit,
        meta,
        api_keys,
    )
    routers += (audit_chain, workflow, webhooks, dashboard, filters)
    for router in (module.router for module in routers):
        app.include_router(router)
    install_openapi(app)
    route_policies(app)  # refuses to build an app with a route that has no access policy
    return app
