"""How deliveries are sent: one request's events in order, exponential back-off between
tries, a bounded number of tries, and the allowed hosts checked again at every send."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.db.session import session_scope
from app.db.workflow import Webhook, WebhookDelivery
from app.embedded import free_port
from tests.conftest import Configure, InProcessService
from tests.webhook_receiver import Receiver
from worker import webhooks

EVENTS = ["deletion_request.received", "deletion_request.queued"]


@pytest.fixture(params=["sqlite", "postgres"])
def service(configure: Configure, request: pytest.FixtureRequest) -> Iterator[InProcessService]:
    backend = {}
    if request.param == "postgres":
        backend = {
            "database_url": request.getfixturevalue("postgres_url"),
            "broker_url": request.getfixturevalue("redis_url"),
        }
    settings = configure(
        **backend, webhook_allowed_hosts="127.0.0.1", webhook_max_tries="3", webhook_backoff_s="0.3"
    )
    service = InProcessService(settings)
    yield service
    service.close()


def _deliveries(hook_id: int) -> list[WebhookDelivery]:
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook_id)
            .order_by(WebhookDelivery.id)
        ).all()
        session.expunge_all()
        return list(rows)


def test_back_off_bounded_tries_and_order(service: InProcessService, tiny_dataset: Path) -> None:
    client = service.client
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], shards=1, slices=1, epochs_per_slice=1)
    port = free_port()
    hook = client.post(
        "/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/in", "events": EVENTS}
    ).json()
    receiver = Receiver(port, hook["secret"], answers=[500, 503, 500])
    receiver.start()
    try:
        name = "bear/" + sorted(p.name for p in (tiny_dataset / "train" / "bear").iterdir())[0]
        request = service.submit({"model": model["id"], "filenames": [name]})
        assert [d.event_type for d in _deliveries(hook["id"])] == EVENTS

        # First try fails: the next one waits the back-off, and nothing later jumps ahead.
        assert webhooks.deliver_pending(hook["id"], request["id"]) == pytest.approx(0.3)
        first = _deliveries(hook["id"])[0]
        assert (first.state, first.tries, first.last_status_code) == ("pending", 1, 500)
        waiting = webhooks.deliver_pending(hook["id"], request["id"])
        assert isinstance(waiting, float) and 0 < waiting <= 0.3 and receiver.hits == 1
        assert webhooks.due_pairs() == []
        time.sleep(0.35)
        assert webhooks.due_pairs() == [(hook["id"], request["id"])]
        assert webhooks.deliver_pending(hook["id"], request["id"]) == pytest.approx(0.6)
        time.sleep(0.65)
        # The third try is the last: the delivery is given up and the next one goes out.
        assert webhooks.deliver_pending(hook["id"], request["id"]) is None
        rows = _deliveries(hook["id"])
        assert [(d.state, d.tries) for d in rows] == [("failed", 3), ("delivered", 1)]
        assert receiver.hits == 4 and receiver.bad_signatures == 0
        assert [p["type"] for _, p in receiver.arrivals] == ["deletion_request.queued"]

        # A redelivery goes out with the same webhook-id.
        again = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{rows[0].id}/redeliver")
        assert again.status_code == 200 and again.json()["state"] == "pending"
        assert webhooks.deliver_pending(hook["id"], request["id"]) is None
        assert receiver.arrivals[-1][0] == rows[0].message_id

        # A host taken off the list is not contacted, whatever the stored URL says.
        with session_scope() as session:
            session.execute(
                update(Webhook).where(Webhook.id == hook["id"]).values(url="http://10.9.8.7/x")
            )
        client.post(f"/v1/webhooks/{hook['id']}/deliveries/{rows[1].id}/redeliver")
        hits = receiver.hits
        assert webhooks.deliver_pending(hook["id"], request["id"]) == pytest.approx(0.3)
        refused = _deliveries(hook["id"])[1]
        assert "FORGETD_WEBHOOK_ALLOWED_HOSTS" in (refused.last_error or "")
        assert receiver.hits == hits
    finally:
        receiver.stop()
