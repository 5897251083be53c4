"""Signed webhooks with real processes: a receiver started by the test verifies every
Standard Webhooks signature; it is down at first, then up, and every event of every request
still arrives, in order per request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.embedded import deployment, free_port
from tests.conftest import TINY_MODEL, make_subset
from tests.webhook_receiver import Receiver


@pytest.fixture(params=["postgres", "embedded"])
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "embedded":
        yield {}
        return
    yield {
        "FORGETD_DATABASE_URL": request.getfixturevalue("postgres_url"),
        "FORGETD_BROKER_URL": request.getfixturevalue("redis_url"),
        "FORGETD_RESULT_BACKEND": request.getfixturevalue("redis_url"),
    }


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.mark.slow
def test_signed_webhooks_reach_a_receiver_that_was_down(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    root = make_subset(tmp_path / "data" / "animals", train_per_class=24, test_per_class=8)
    env = {
        **backend_env,
        "FORGETD_DATA_ROOTS": str(tmp_path / "data"),
        "FORGETD_DEVICE": "cpu",
        "FORGETD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "FORGETD_WEBHOOK_BACKOFF_S": "0.5",
        "FORGETD_WEBHOOK_MAX_TRIES": "40",
        "FORGETD_SWEEP_INTERVAL_S": "3",
    }
    port = free_port()
    with deployment(tmp_path / "home", env=env) as deployed, deployed.client() as client:
        for bad, field in (
            ({"url": "ftp://127.0.0.1/hook"}, "http"),
            ({"url": "http://10.0.0.7/hook"}, "FORGETD_WEBHOOK_ALLOWED_HOSTS"),
            ({"url": f"http://127.0.0.1:{port}/", "events": ["nope"]}, "unknown event"),
            ({"url": f"http://127.0.0.1:{port}/", "secret": "whsec_!!"}, "secret"),
        ):
            refused = client.post("/v1/webhooks", json=bad)
            assert refused.status_code == 422 and field in refused.json()["detail"], refused.text
        created = client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/hook"})
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in client.get("/v1/webhooks").json()[0]
        receiver = Receiver(port, hook["secret"])

        dataset = client.post("/v1/datasets", json={"name": "animals", "root": str(root)}).json()
        spec = {**TINY_MODEL, "name": "hooked", "dataset": dataset["id"], "shards": 2, "slices": 1}
        spec["epochs_per_slice"] = 1
        model = client.post("/v1/models", json=spec).json()
        deployed.wait_until(client, f"/v1/models/{model['id']}", {"ready", "failed"}, 600)
        names = sorted(p.name for p in (root / "train" / "zebra").iterdir())[:2]
        ids = []
        for name in names:
            response = client.post(
                "/v1/deletion-requests", json={"model": model["id"], "filenames": [f"zebra/{name}"]}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deliveries_url = f"/v1/webhooks/{hook['id']}/deliveries"
        # The receiver is down: deliveries fail and wait for their next try.
        _wait(
            lambda: any(d["tries"] >= 2 for d in client.get(deliveries_url).json()),
            120,
            "no failed tries while the receiver was down",
        )
        failed_before = client.get(deliveries_url).json()
        assert all(d["state"] == "pending" for d in failed_before)
        assert any("ConnectError" in (d["last_error"] or "") for d in failed_before)
        receiver.start()
        try:
            for request_id in ids:
                done = deployed.wait_until(
                    client, f"/v1/deletion-requests/{request_id}", {"completed", "failed"}, 600
                )
                assert done["status"] == "completed", done

            def all_delivered() -> list[dict]:
                rows = client.get(deliveries_url).json()
                finished = rows and all(d["state"] == "delivered" for d in rows)
                kinds = {d["event_type"] for d in rows}
                return rows if finished and "deletion_request.completed" in kinds else []

            rows = _wait(all_delivered, 180, "not every delivery arrived")
            arrived = receiver.first_arrivals()
            for request_id in ids:
                timeline = client.get(f"/v1/deletion-requests/{request_id}/events").json()
                expected = [
                    f"deletion_request.{e['kind']}"
                    for e in timeline["events"]
                    if e["kind"] != "shard_retrained"
                ]
                assert arrived[request_id] == expected
                assert expected[0].endswith("received") and expected[-1].endswith("completed")
            assert receiver.bad_signatures == 0
            assert len({m for m, _ in receiver.arrivals}) == len(rows)
            for name in names:  # ids, status and hashes only
                assert not any(name in body for body in receiver.raw_bodies)
            completed = next(p for _, p in receiver.arrivals if p["type"].endswith("completed"))
            assert len(completed["data"]["detail"]["manifest_sha256"]) == 64

            # A redelivery sends the same message (same webhook-id) again.
            first = rows[0]
            again = client.post(f"{deliveries_url}/{first['id']}/redeliver")
            assert again.status_code == 200, again.text
            _wait(
                lambda: sum(m == first["message_id"] for m, _ in receiver.arrivals) >= 2,
                60,
                "the redelivery did not arrive",
            )
            assert client.post(f"{deliveries_url}/999999/redeliver").status_code == 404
            gone = client.delete(f"/v1/webhooks/{hook['id']}")
            assert gone.status_code == 200 and client.get("/v1/webhooks").json() == []
            body = json.loads(receiver.raw_bodies[0])
            assert set(body) == {"type", "timestamp", "data"}
        finally:
            receiver.stop()
