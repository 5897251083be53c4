"""The lifecycle around a deletion request: approval, deadlines, duplicates, retries and the
event timeline, on the embedded default and on PostgreSQL + Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.db.models import DeletionRequest
from app.db.session import session_scope

SMALL = {"shards": 2, "slices": 1, "epochs_per_slice": 1}


def _files(root: Path, count: int) -> list[str]:
    names = sorted(p.name for p in (root / "train" / "bear").iterdir())
    return [f"bear/{name}" for name in names[:count]]


def _parse(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # SQLite's are naive UTC


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_service")


def test_approval_deadlines_duplicates_and_events(service: Any, tiny_dataset: Path) -> None:
    client = service.client
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], **SMALL)
    assert model["require_approval"] is False
    patched = client.patch(f"/v1/models/{model['id']}", json={"require_approval": True})
    assert patched.status_code == 200 and patched.json()["require_approval"] is True
    first, second, third, fourth = _files(tiny_dataset, 4)

    body = {"model": model["id"], "filenames": [first], "external_id": "ticket-1"}
    created = client.post("/v1/deletion-requests", json=body, headers={"Idempotency-Key": "k1"})
    assert created.status_code == 202, created.text
    request = created.json()
    assert request["status"] == "pending_approval"
    due = _parse(request["due_at"]) - _parse(request["created_at"])
    assert abs(due - timedelta(days=30)) < timedelta(seconds=5)
    assert request["overdue"] is False and request["attempt"] == 1
    url = f"/v1/deletion-requests/{request['id']}"

    # The same external_id while the first is open: 409 naming it; a replay stays a 200.
    duplicate = client.post("/v1/deletion-requests", json={**body, "filenames": [second]})
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["existing_request_id"] == request["id"]
    replay = client.post("/v1/deletion-requests", json=body, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 200 and replay.json()["id"] == request["id"]

    # Nothing runs before the approval.
    service.run_worker(model["id"])
    assert client.get(url).json()["status"] == "pending_approval"
    assert client.post(f"{url}/retry").status_code == 409
    approved = client.post(f"{url}/approve", json={"reason": "identity checked"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] in ("received", "queued")
    again = client.post(f"{url}/approve")
    assert again.status_code == 409 and "pending_approval" in again.json()["detail"]
    service.run_worker(model["id"])
    done = client.get(url).json()
    assert done["status"] == "completed", done

    timeline = client.get(f"{url}/events").json()["events"]
    kinds = [e["kind"] for e in timeline]
    assert kinds[:4] == ["received", "pending_approval", "approved", "queued"]
    assert kinds[-3:] == ["audited", "files_erased", "completed"]
    assert "running" in kinds and "shard_retrained" in kinds
    assert kinds.index("running") < kinds.index("shard_retrained") < kinds.index("audited")
    times = [_parse(e["at"]) for e in timeline]
    assert times == sorted(times)
    assert timeline[2]["detail"]["reason"] == "identity checked"
    assert len(timeline[-3]["detail"]["report_sha256"]) == 64
    assert first not in str(timeline) and first.split("/")[1] not in str(timeline)

    # Every wrong transition on a completed request is a clear 409.
    for action in ("approve", "retry"):
        refused = client.post(f"{url}/{action}")
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "completed" in refused.json()["detail"]
    assert client.post(f"{url}/deny", json={"reason": "x"}).status_code == 409
    # Once completed, the external_id may be used again.
    reused = client.post("/v1/deletion-requests", json={**body, "filenames": [second]})
    assert reused.status_code == 202, reused.text

    # Denial is final and keeps its reason; a deny without a reason is refused.
    denied_id = client.post(
        "/v1/deletion-requests", json={"model": model["id"], "filenames": [third]}
    ).json()["id"]
    denied_url = f"/v1/deletion-requests/{denied_id}"
    assert client.post(f"{denied_url}/deny", json={}).status_code == 422
    denied = client.post(f"{denied_url}/deny", json={"reason": "not the data subject"})
    assert denied.status_code == 200
    assert denied.json()["status"] == "denied"
    assert "not the data subject" in denied.json()["status_reason"]
    assert client.post(f"{denied_url}/approve").status_code == 409
    assert [e["kind"] for e in client.get(f"{denied_url}/events").json()["events"]][-1] == (
        "denied"
    )

    # Deadlines: per request within bounds; overdue when open past it; sorted by due_at.
    bad = client.post(
        "/v1/deletion-requests",
        json={"model": model["id"], "filenames": [fourth], "deadline_days": 0},
    )
    assert bad.status_code == 422 and "deadline_days" in bad.text
    late = client.post(
        "/v1/deletion-requests",
        json={"model": model["id"], "filenames": [fourth], "deadline_days": 2},
    ).json()
    assert abs(_parse(late["due_at"]) - _parse(late["created_at"]) - timedelta(days=2)) < (
        timedelta(seconds=5)
    )
    with session_scope() as session:
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == late["id"])
            .values(due_at=datetime.now(UTC) - timedelta(hours=1))
        )
    overdue = client.get("/v1/deletion-requests", params={"overdue": "true"}).json()
    assert [r["id"] for r in overdue["items"]] == [late["id"]] and overdue["items"][0]["overdue"]
    on_time = client.get("/v1/deletion-requests", params={"overdue": "false"}).json()
    assert late["id"] not in [r["id"] for r in on_time["items"]] and on_time["total"] == 3
    by_due = client.get("/v1/deletion-requests", params={"sort": "due_at"}).json()["items"]
    dues = [_parse(r["due_at"]) for r in by_due]
    assert dues == sorted(dues) and by_due[0]["id"] == late["id"]
    assert client.get("/v1/deletion-requests", params={"sort": "name"}).status_code == 422


def test_a_failed_request_is_retried_under_the_same_id(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    client = service.client
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], **SMALL)
    target = _files(tiny_dataset, 1)[0]
    path = tiny_dataset / "train" / target
    moved = path.with_name("moved-away.bin")
    path.rename(moved)  # the erasure check refuses a missing file: the attempt fails
    failed = service.forget({"model": model["id"], "filenames": [target]})
    assert failed["status"] == "failed", failed
    url = f"/v1/deletion-requests/{failed['id']}"

    moved.rename(path)
    retried = client.post(f"{url}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["attempt"] == 2 and retried.json()["status"] in ("received", "queued")
    service.run_worker(model["id"])
    done = client.get(url).json()
    assert done["status"] == "completed", done
    assert not path.exists()
    attempts = done["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["status"] == "failed" and "cannot be read" in attempts[0]["reason"]
    assert attempts[1]["status"] == "completed"
    kinds = [e["kind"] for e in client.get(f"{url}/events").json()["events"]]
    assert kinds.count("failed") == 1 and "retried" in kinds
    assert kinds.index("failed") < kinds.index("retried") < kinds.index("completed")
