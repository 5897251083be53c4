"""The dashboard's server-rendered panel on both back ends (the browser test runs it live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.db.models import DeletionRequest
from app.db.session import session_scope


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_service")


def test_the_panel_lists_requests_overdue_first_for_staff_only(
    service: Any, tiny_dataset: Path
) -> None:
    page = service.client_for(None).get("/dashboard")
    assert page.status_code == 200 and "sessionStorage" in page.text
    assert "fgd_" not in page.text.replace('placeholder="fgd_..."', "")
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], shards=1, slices=1, epochs_per_slice=1)
    names = sorted(p.name for p in (tiny_dataset / "train" / "bear").iterdir())[:2]
    done = service.forget({"model": model["id"], "filenames": [f"bear/{names[0]}"]})
    assert done["status"] == "completed"
    waiting = service.submit(
        {"model": model["id"], "filenames": [f"bear/{names[1]}"], "deadline_days": 1}
    )
    with session_scope() as session:
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == waiting["id"])
            .values(due_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    auditor = service.client_for("auditor")
    panel = auditor.get("/dashboard/panel")
    assert panel.status_code == 200, panel.text
    html = panel.text
    assert html.index(waiting["id"]) < html.index(done["id"])
    assert f'class="request overdue" data-id="{waiting["id"]}"' in html
    assert f"/v1/deletion-requests/{done['id']}/report" in html
    assert "tiny-sisa" in html and names[0] not in html and names[1] not in html
    assert service.client_for("requester").get("/dashboard/panel").status_code == 403
    assert service.client_for(None).get("/dashboard/panel").status_code == 401
