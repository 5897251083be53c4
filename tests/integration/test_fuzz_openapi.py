"""Property-based fuzzing of the whole HTTP contract (schemathesis, from the OpenAPI document)
against the real app on PostgreSQL: no server error, every error a problem+json, every response
as documented."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.api.main import create_app
from app.db.migrate import upgrade_to_head
from app.db.session import reset_engine_cache
from app.services.keys import signing_key
from app.settings import get_settings
from tests.conftest import bearer, mint_key

PROBLEM = "application/problem+json"
# The app reads its settings, engine and broker per call: the fixture below points them at a
# fresh PostgreSQL database before the first call.
APP = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def admin_headers(
    postgres_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A fresh database (shared by every operation: fuzzing one is enough), an admin key."""
    from worker.celery_app import celery_app, reconfigure

    name = f"forgetd_fuzz_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    data = tmp_path_factory.mktemp("fuzz-data")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FORGETD_HOME_DIR", str(tmp_path_factory.mktemp("fuzz-home")))
            patch.setenv("FORGETD_DATA_ROOTS", str(data))
            patch.setenv("FORGETD_DATABASE_URL", url)
            patch.setenv("FORGETD_BROKER_URL", redis_server)
            patch.setenv("FORGETD_RESULT_BACKEND", redis_server)
            get_settings.cache_clear()
            reset_engine_cache()
            settings_ = get_settings()
            settings_.ensure_folders()
            upgrade_to_head(url)
            signing_key(settings_)
            reconfigure(celery_app, settings_)
            yield bearer(mint_key("admin"))
    finally:
        get_settings.cache_clear()
        reset_engine_cache()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def problem_json_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is an RFC 9457 problem that says what is wrong, in a bounded body."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith(PROBLEM), (response.status_code, content_type)
    body = response.json()
    assert body["status"] == response.status_code and body["detail"], body
    assert len(response.content) < 64_000, len(response.content)
    return None


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("FORGETD_FUZZ_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: Any, admin_headers: dict[str, str]) -> None:
    case.call_and_validate(
        headers=admin_headers,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
            problem_json_errors,
        ],
    )
