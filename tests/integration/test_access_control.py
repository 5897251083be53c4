"""Who may do what: API keys with roles on every route, requester isolation, and the keys'
life cycle over HTTP and from the CLI beside a running server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.api.auth import route_policies
from app.db.models import DeletionRequest
from app.db.session import session_scope
from app.embedded import deployment
from tests.conftest import bearer

PROBLEM = "application/problem+json"
ROLES = ("requester", "operator", "auditor", "admin")
PUBLIC = "public"
STAFF = {"operator", "auditor", "admin"}
# The access policy, written out independently of the code: (method, path) -> roles admitted.
EXPECTED: dict[tuple[str, str], set[str] | str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/v1/keys"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("POST", "/v1/datasets"): {"operator", "admin"},
    ("GET", "/v1/datasets/{dataset_ref}"): {"operator", "admin"},
    ("POST", "/v1/models"): {"operator", "admin"},
    ("GET", "/v1/models/{model_ref}"): {"operator", "admin"},
    ("POST", "/v1/models/import"): {"operator", "admin"},
    ("POST", "/v1/backbones"): {"operator", "admin"},
    ("GET", "/v1/backbones"): {"operator", "admin"},
    ("GET", "/v1/backbones/{backbone_ref}"): {"operator", "admin"},
    # A model's weight filters are model-level work, like training it.
    ("POST", "/v1/models/{model_ref}/filters"): {"operator", "admin"},
    ("GET", "/v1/models/{model_ref}/filters"): {"operator", "admin"},
    ("POST", "/v1/deletion-requests"): {"requester", "admin"},
    ("GET", "/v1/deletion-requests"): set(ROLES),
    ("GET", "/v1/deletion-requests/{request_id}"): set(ROLES),
    ("POST", "/v1/deletion-requests/{request_id}/cancel"): {"requester", "operator", "admin"},
    ("GET", "/v1/deletion-requests/{request_id}/report"): set(ROLES),
    ("GET", "/v1/methods"): set(ROLES),
    ("GET", "/v1/audit-chain"): {"auditor", "admin"},
    ("GET", "/v1/audit-chain/head"): {"operator", "auditor", "admin"},
    ("GET", "/metrics"): {"auditor", "admin"},
    ("POST", "/v1/api-keys"): {"admin"},
    ("GET", "/v1/api-keys"): {"admin"},
    ("DELETE", "/v1/api-keys/{key_id}"): {"admin"},
    # The compliance workflow: operators decide, every role reads its own requests' events.
    ("PATCH", "/v1/models/{model_ref}"): {"operator", "admin"},
    ("POST", "/v1/deletion-requests/{request_id}/approve"): {"operator", "admin"},
    ("POST", "/v1/deletion-requests/{request_id}/deny"): {"operator", "admin"},
    ("POST", "/v1/deletion-requests/{request_id}/retry"): {"operator", "admin"},
    ("GET", "/v1/deletion-requests/{request_id}/events"): set(ROLES),
    ("POST", "/v1/webhooks"): {"operator", "admin"},
    ("GET", "/v1/webhooks"): {"operator", "admin"},
    ("DELETE", "/v1/webhooks/{webhook_id}"): {"operator", "admin"},
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {"operator", "admin"},
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): {"operator", "admin"},
    # The dashboard page holds no data; its panel is for staff.
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/dashboard/panel"): STAFF,
}
PLACEHOLDERS = {
    "dataset_ref": "999999",
    "model_ref": "999999",
    "backbone_ref": "999999",
    "request_id": "00000000-0000-0000-0000-000000000000",
    "key_id": "999999",
    "webhook_id": "999999",
    "delivery_id": "999999",
}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path)


def _call(client: Any, method: str, path: str) -> Any:
    if method in ("POST", "PUT", "PATCH"):
        return client.request(method, _concrete(path), json={})
    return client.request(method, _concrete(path))


def test_every_route_and_role_gets_exactly_its_policy(sqlite_service) -> None:
    """Built from the app's own route table: a route added without a policy, or with another
    policy than the one written here, fails."""
    service = sqlite_service
    clients = {role: service.client_for(role) for role in ROLES}
    clients["anonymous"] = service.client_for(None)
    table = route_policies(service.app)
    routes = sorted({(m, r.path) for r in table for m in r.methods if m != "HEAD"})
    assert set(routes) == set(EXPECTED), "routes without an expected policy in this test"
    unexpected: list[str] = []
    checked = 0
    for method, path in routes:
        admitted = EXPECTED[(method, path)]
        for who, client in clients.items():
            response = _call(client, method, path)
            checked += 1
            allowed = admitted == PUBLIC or who in admitted
            if allowed and response.status_code in (401, 403):
                unexpected.append(f"{who} refused {method} {path}: {response.status_code}")
            if not allowed:
                wanted = 401 if who == "anonymous" else 403
                if response.status_code != wanted:
                    unexpected.append(f"{who} {method} {path}: {response.status_code}")
                    continue
                assert response.headers["content-type"].startswith(PROBLEM)
                if wanted == 401:
                    assert response.headers["www-authenticate"] == "Bearer"
    assert unexpected == []
    assert checked == len(EXPECTED) * 5


def test_a_route_without_a_policy_is_refused(sqlite_service) -> None:
    app = sqlite_service.app

    @app.get("/v1/unguarded")
    def unguarded() -> dict[str, str]:
        return {"open": "yes"}

    with pytest.raises(RuntimeError, match="exactly one access policy"):
        route_policies(app)


def test_bad_keys_get_401(sqlite_service) -> None:
    service = sqlite_service
    for header in ("Bearer fgd_not-a-key", "Bearer ", "Basic dXNlcjpwYXNz", "fgd_x"):
        response = service.client_for(None).get(
            "/v1/deletion-requests", headers={"Authorization": header}
        )
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"


def test_keys_over_http_are_shown_once_stored_hashed_and_revoked_at_once(sqlite_service) -> None:
    service = sqlite_service
    admin = service.client
    created = admin.post("/v1/api-keys", json={"role": "requester", "name": "crm"})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("fgd_") and len(key) >= 4 + 43  # 32 random bytes, base64
    listed = admin.get("/v1/api-keys").json()
    assert {"id", "name", "role", "prefix", "created_at", "last_used_at", "revoked_at"} == set(
        listed[0]
    )
    assert key not in str(listed)
    with session_scope() as session:
        from app.db.models import ApiKey

        stored = session.scalars(select(ApiKey)).all()
        assert all(key not in (row.key_sha256, row.prefix) for row in stored)

    requester = service.client_for(None, key)
    assert requester.get("/v1/methods").status_code == 200
    mine = next(k for k in admin.get("/v1/api-keys").json() if k["id"] == body["id"])
    assert mine["last_used_at"] is not None
    assert requester.post("/v1/api-keys", json={"role": "admin"}).status_code == 403
    assert admin.post("/v1/api-keys", json={"role": "root"}).status_code == 422

    revoked = admin.delete(f"/v1/api-keys/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = requester.get("/v1/methods")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def _ready_model(service: Any, root: Path) -> dict:
    dataset = service.register_dataset(root)
    return service.train_model(dataset["id"], shards=1, slices=1, epochs_per_slice=1)


def test_requesters_see_only_their_own_requests(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    model = _ready_model(service, tiny_dataset)
    alice, bob = service.client_for("requester"), service.client_for("requester")
    body = {"model": model["id"], "filenames": ["bear/" + _first("bear", tiny_dataset)]}
    created = alice.post(
        "/v1/deletion-requests",
        json={**body, "external_id": "alice@example.com"},
        headers={"Idempotency-Key": "ticket-alice-1"},
    )
    assert created.status_code == 202, created.text
    request = created.json()
    url = f"/v1/deletion-requests/{request['id']}"
    assert alice.get(url).json()["external_id"] == "alice@example.com"

    # Another requester cannot see, probe, cancel or replay it: it does not exist for bob.
    for response in (
        bob.get(url),
        bob.post(f"{url}/cancel"),
        bob.get(f"{url}/report"),
    ):
        assert response.status_code == 404, response.text
        # The very answer an id that never existed gets.
        assert response.json()["detail"] == f"deletion request {request['id']!r} does not exist"
    assert bob.get("/v1/deletion-requests").json()["total"] == 0
    replay = bob.post(
        "/v1/deletion-requests",
        json={**body, "external_id": "alice@example.com"},
        headers={"Idempotency-Key": "ticket-alice-1"},
    )
    # One open request per (model, external_id), whoever sends it; bob is not told its id.
    assert replay.status_code == 409, replay.text
    assert request["id"] not in replay.text and "existing_request_id" not in replay.json()
    again = alice.post(
        "/v1/deletion-requests",
        json={**body, "external_id": "alice@example.com"},
        headers={"Idempotency-Key": "ticket-alice-1"},
    )
    assert again.status_code == 200 and again.json()["id"] == request["id"]
    assert alice.get("/v1/deletion-requests").json()["total"] == 1

    # Staff roles see every request, with its external_id; the auditor only reads.
    operator, auditor = service.client_for("operator"), service.client_for("auditor")
    assert operator.get("/v1/deletion-requests").json()["total"] == 1
    assert auditor.get(url).json()["external_id"] == "alice@example.com"
    assert auditor.post(f"{url}/cancel").status_code == 403
    assert operator.post(f"{url}/cancel").json()["status"] == "cancelled"

    # The Idempotency-Key itself (often a ticket id) is not stored.
    with session_scope() as session:
        stored = session.scalars(select(DeletionRequest.idempotency_key)).all()
    assert "ticket-alice-1" not in stored and all(len(s or "") in (0, 64) for s in stored)


def _first(class_name: str, root: Path) -> str:
    return sorted(p.name for p in (root / "train" / class_name).iterdir())[0]


@pytest.mark.slow
def test_cli_keys_beside_a_running_embedded_server(tmp_path: Path) -> None:
    """`forgetd keys create/list/revoke` on the embedded SQLite database while `forgetd serve`
    runs on it: the key is the last line printed, works at once, and stops working at once."""
    with deployment(tmp_path / "home", workers=0) as deployed:
        assert httpx.get(f"{deployed.base_url}/v1/methods").status_code == 401
        created = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "create", "--role", "auditor"],
            env=deployed.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"fgd_[A-Za-z0-9_-]{43}", key)
        headers = bearer(key)
        assert httpx.get(f"{deployed.base_url}/metrics", headers=headers).status_code == 200
        assert httpx.get(f"{deployed.base_url}/v1/api-keys", headers=headers).status_code == 403
        listing = subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "list"],
            env=deployed.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert key not in listing and key[:10] in listing
        key_id = next(line.split()[0] for line in listing.splitlines() if key[:10] in line.split())
        subprocess.run(
            [sys.executable, "-m", "app.cli", "keys", "revoke", key_id],
            env=deployed.env,
            timeout=120,
            check=True,
            capture_output=True,
        )
        assert httpx.get(f"{deployed.base_url}/metrics", headers=headers).status_code == 401
        # The deployment's own admin key came from the same command.
        admin = httpx.get(f"{deployed.base_url}/v1/api-keys", headers=deployed.headers)
        assert admin.status_code == 200 and len(admin.json()) == 2
