"""No 5xx for what a caller can send, and none for a request that was stored: concurrent
submissions, one Idempotency-Key raced by many callers, out-of-range ids and offsets, NUL bytes,
overlong paths and huge bodies all get a problem+json 2xx/4xx answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import InProcessService, mint_key
from tests.integration.live_api import live_api, post_all

PROBLEM = "application/problem+json"


def _ready_model(service: InProcessService, dataset: Path) -> tuple[dict[str, Any], list[str]]:
    """A trained tiny SISA model and its training files (relative paths)."""
    registered = service.register_dataset(dataset)
    model = service.train_model(registered["id"], shards=2, slices=1, epochs_per_slice=1)
    names = sorted(
        str(path.relative_to(dataset)) for path in (dataset / "train").rglob("*") if path.is_file()
    )
    return model, names


def _stored_ids() -> set[str]:
    from app.db.models import DeletionRequest
    from app.db.session import session_scope

    with session_scope() as session:
        return set(session.scalars(select(DeletionRequest.id)).all())


def _burst_stores_nothing_silently(
    service: InProcessService, dataset: Path, tmp_path: Path, calls: int
) -> None:
    model, names = _ready_model(service, dataset)
    key = mint_key("requester")
    bodies = [({"model": model["id"], "filenames": [name]}, None) for name in names[:calls]]
    with live_api(tmp_path / "api.log") as url:
        burst = post_all(url, key, bodies, threads=calls)
    assert not burst.server_errors(), [(o.status, o.body) for o in burst.server_errors()][:5]
    assert {o.status for o in burst.outcomes} == {202}
    stored = _stored_ids()
    assert burst.accepted_ids() == stored  # nothing stored without a 2xx, nothing 2xx unstored
    assert len(stored) == calls
    _configs_refused_by_name(service, model["id"])


def _configs_refused_by_name(service: InProcessService, model_id: int) -> None:
    """Non-finite and absurd numbers in a method configuration: a short 422 naming the field."""
    client = service.client
    for config in (
        {"lr": float("inf")},
        {"lr": float("nan")},
        {"lr": 1e308},
        {"lr": "x" * 10_000_000},
        {"weight_decay": -float("inf")},
    ):
        body = {
            "model": model_id,
            "class_name": "bear",
            "method": "finetune",
            "method_config": config,
        }
        raw = json.dumps(body)  # Infinity and NaN as Python writes them (httpx refuses)
        headers = {"content-type": "application/json"}
        response = client.post("/v1/deletion-requests", content=raw, headers=headers)
        problem = _problem(response, 422)
        assert next(iter(config)) in problem["detail"] + str(problem.get("errors")), problem


def test_concurrent_submissions_on_the_embedded_default(
    sqlite_service: InProcessService, tiny_dataset: Path, tmp_path: Path
) -> None:
    _burst_stores_nothing_silently(sqlite_service, tiny_dataset, tmp_path, calls=140)


def test_concurrent_submissions_on_postgres_and_redis(
    postgres_service: InProcessService, tiny_dataset: Path, tmp_path: Path
) -> None:
    _burst_stores_nothing_silently(postgres_service, tiny_dataset, tmp_path, calls=120)


def test_one_idempotency_key_raced_by_many_callers(
    postgres_service: InProcessService, tiny_dataset: Path, tmp_path: Path
) -> None:
    model, names = _ready_model(postgres_service, tiny_dataset)
    key = mint_key("requester")
    body = {"model": model["id"], "filenames": names[:2]}
    with live_api(tmp_path / "api.log") as url:
        for round_ in range(3):
            burst = post_all(url, key, [(body, f"same-{round_}")] * 20, threads=20)
            statuses = sorted(o.status for o in burst.outcomes)
            assert statuses == [200] * 19 + [202], [o.body for o in burst.outcomes][:3]
            assert len(burst.accepted_ids()) == 1
            body = {"model": model["id"], "filenames": names[2 * round_ + 2 : 2 * round_ + 4]}
        other = httpx.post(
            f"{url}/v1/deletion-requests",
            json={"model": model["id"], "filenames": names[50:51]},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "same-0"},
        )
    assert other.status_code == 422 and other.headers["content-type"].startswith(PROBLEM)
    assert "Idempotency-Key" in other.json()["detail"]
    assert len(_stored_ids()) == 3


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM)
    assert len(response.content) < 20_000, len(response.content)
    return response.json()


@pytest.fixture(params=["sqlite", "postgres"])
def any_service(request: pytest.FixtureRequest) -> InProcessService:
    return request.getfixturevalue(f"{request.param}_service")


def test_out_of_range_ids_offsets_and_odd_digits(any_service: InProcessService) -> None:
    client = any_service.client
    for path in (
        "/v1/models/2147483648",
        "/v1/datasets/2147483648",
        "/v1/models/99999999999999999999999",
        "/v1/datasets/²",
        "/v1/models/²",
        "/v1/models/-1",
        "/v1/models/0",
    ):
        _problem(client.get(path), 404)
    _problem(client.delete("/v1/api-keys/2147483648"), 404)
    for path in (
        "/v1/deletion-requests?offset=9223372036854775808",
        "/v1/deletion-requests?offset=9223372036854775807",
        "/v1/audit-chain?offset=9223372036854775808",
        "/v1/deletion-requests?model=2147483648",
    ):
        response = client.get(path)
        assert response.status_code in (404, 422), response.text[:300]
        _problem(response, response.status_code)
    for field in ("dataset",):
        body = {"name": "m", field: 10**29}
        problem = _problem(client.post("/v1/models", json=body), 422)
        assert field in problem["detail"]
    problem = _problem(client.post("/v1/models", json={"name": "m", "dataset": 2**40}), 422)
    assert "dataset" in problem["detail"]
    problem = _problem(
        client.post("/v1/deletion-requests", json={"model": 10**29, "filenames": ["a.png"]}), 422
    )
    assert "model" in problem["detail"]


def test_nul_bytes_anywhere_are_refused(any_service: InProcessService, tmp_path: Path) -> None:
    client = any_service.client
    for path in (
        "/v1/models/a%00b",
        "/v1/datasets/a%00b",
        "/v1/deletion-requests/a%00b",
        "/v1/deletion-requests?model=a%00b",
        "/v1/deletion-requests?status=a%00b",
    ):
        _problem(client.get(path), 422)
    bodies = {
        "/v1/datasets": [{"name": "x", "root": f"{tmp_path}/a\x00b"}],
        "/v1/models": [
            {"name": "m", "dataset": "a\x00b"},
            {"name": "m", "dataset": "d", "architecture": "a\x00"},
        ],
        "/v1/deletion-requests": [
            {"model": "a\x00b", "filenames": ["x.png"]},
            {"model": "m", "filenames": ["x\x00.png"]},
            {"model": "m", "class_name": "a\x00"},
            {"model": "m", "class_names": ["a\x00"]},
            {"model": "m", "class_name": "a", "external_id": "e\x00"},
            {"model": "m", "class_name": "a", "method": "f\x00"},
            {"model": "m", "class_name": "a", "method_config": {"optimizer": "s\x00"}},
        ],
        "/v1/models/import": [
            {
                "name": "m",
                "dataset": "d",
                "class_names": ["a"],
                "state_dict_path": f"{tmp_path}/\x00.pt",
            }
        ],
        "/v1/api-keys": [{"role": "requester", "name": "a\x00"}],
    }
    for path, payloads in bodies.items():
        for payload in payloads:
            _problem(client.post(path, json=payload), 422)


def test_overlong_paths_and_huge_bodies_get_short_problems(
    any_service: InProcessService, tmp_path: Path
) -> None:
    client = any_service.client
    long_component = str(tmp_path / ("a" * 300) / "b")
    long_path = str(tmp_path) + "/" + "/".join(["abcdefgh"] * 600)
    for root in (long_component, long_path[:4096], long_path):
        problem = _problem(client.post("/v1/datasets", json={"name": "x", "root": root}), 422)
        assert "root" in problem["detail"]
    for path in (long_component + ".pt", long_path[:4000] + ".pt"):
        body = {"name": "m", "dataset": "d", "class_names": ["a"], "state_dict_path": path}
        _problem(client.post("/v1/models/import", json=body), 422)
    huge = {"model": "m", "filenames": ["y" * 5_000_000]}
    _problem(client.post("/v1/deletion-requests", json=huge), 422)
    huge = {"model": ["z" * 5_000_000], "filenames": ["a"]}
    _problem(client.post("/v1/deletion-requests", json=huge), 422)


def test_a_stored_request_gets_its_202_when_the_broker_is_down(
    postgres_service: InProcessService, configure: Any, postgres_url: str, tiny_dataset: Path
) -> None:
    """Then nothing listens on the broker's port: the request is stored, its caller gets the
    202, and it stays "received" for the sweep to send again."""
    model, names = _ready_model(postgres_service, tiny_dataset)
    service = InProcessService(
        configure(database_url=postgres_url, broker_url="redis://127.0.0.1:9/0")
    )
    try:
        response = service.client.post(
            "/v1/deletion-requests", json={"model": model["id"], "filenames": names[:1]}
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "received"
        assert _stored_ids() == {response.json()["id"]}
        stored = service.client.get(response.headers["location"]).json()
        assert stored["status"] == "received"
    finally:
        service.close()
