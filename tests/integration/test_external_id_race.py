"""One open request per (model, external_id), whoever sends it: concurrent callers with
different keys race one external_id against the live API (separate connections, the real
database) on the embedded SQLite default and on PostgreSQL. Exactly one is accepted; every
other gets a 409, never a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import InProcessService, mint_key
from tests.integration.live_api import Outcome, live_api

CALLERS = 12


@pytest.fixture(params=["sqlite", "postgres"])
def any_service(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_service")


def _race(url: str, bodies: list[tuple[str, dict[str, Any]]]) -> list[Outcome]:
    from concurrent.futures import ThreadPoolExecutor

    def call(item: tuple[str, dict[str, Any]]) -> Outcome:
        key, body = item
        response = httpx.post(
            f"{url}/v1/deletion-requests",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        found = response.json().get("id") if response.status_code < 300 else None
        return Outcome(response.status_code, found, 0.0, key, response.text[:300])

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(call, bodies))


def test_one_external_id_raced_by_many_callers_opens_one_request(
    any_service: InProcessService, tiny_dataset: Path, tmp_path: Path
) -> None:
    from app.db.models import DeletionRequest
    from app.db.session import session_scope

    service = any_service
    registered = service.register_dataset(tiny_dataset)
    model = service.train_model(registered["id"], shards=1, slices=1, epochs_per_slice=1)
    names = sorted(
        str(p.relative_to(tiny_dataset)) for p in (tiny_dataset / "train").rglob("*.png")
    )
    keys = [mint_key("requester") for _ in range(CALLERS)]
    bodies = [
        (key, {"model": model["id"], "filenames": [names[i]], "external_id": "subject-7"})
        for i, key in enumerate(keys)
    ]
    with live_api(tmp_path / "api.log") as url:
        outcomes = _race(url, bodies)

    statuses = sorted(o.status for o in outcomes)
    assert statuses == [202] + [409] * (CALLERS - 1), [o.body for o in outcomes][:3]
    winner = next(o for o in outcomes if o.status == 202)
    for loser in (o for o in outcomes if o.status == 409):
        assert "external_id" in loser.body
        assert winner.request_id not in loser.body  # another caller's request id stays hidden
    with session_scope() as session:
        stored = session.scalars(
            select(DeletionRequest.id).where(DeletionRequest.external_id == "subject-7")
        ).all()
    assert stored == [winner.request_id]
