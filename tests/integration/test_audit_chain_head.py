"""The chain head served by the API and the sequence numbers the worker assigns, on the real
databases: a saved chain and head verify, and the chain without its last report does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.audit.head import verify_head
from app.audit.verify import verify_file
from app.db.models import AuditReport, Dataset, DeletionRequest, Model
from app.db.session import session_scope
from app.services.keys import signing_key
from worker.audit.publish import append_report


def _publish(settings, n: int) -> None:
    """``n`` reports appended as the worker appends them, each for its own request."""
    with session_scope() as session:
        dataset = Dataset(
            name="d", root="/nowhere", classes=["a"], channels=1, has_test_folder=False
        )
        session.add(dataset)
        session.flush()
        model = Model(name="m", dataset_id=dataset.id, architecture="small_cnn", config={})
        session.add(model)
        session.flush()
        model_id = model.id
    for i in range(n):
        with session_scope() as session:
            request = DeletionRequest(
                model_id=model_id, target_kind="samples", method="sisa", request_fingerprint=str(i)
            )
            session.add(request)
            session.flush()
            append_report(session, request, {"n": i}, signing_key(settings), plots={})


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_head_and_numbered_chain(request, database: str, tmp_path: Path) -> None:
    service = request.getfixturevalue(f"{database.replace('postgresql', 'postgres')}_service")
    auditor, operator = service.client_for("auditor"), service.client_for("operator")
    empty = auditor.get("/v1/audit-chain/head")
    assert empty.status_code == 200, empty.text
    assert empty.json()["count"] == 0 and empty.json()["sha256"] is None

    _publish(service.settings, 3)
    with session_scope() as session:
        rows = session.execute(
            select(AuditReport.sequence, AuditReport.previous_sha256).order_by(AuditReport.id)
        ).all()
    assert [r.sequence for r in rows] == [1, 2, 3] and rows[0].previous_sha256 is None

    head = operator.get("/v1/audit-chain/head")
    assert head.status_code == 200, head.text
    body = head.json()
    assert (body["count"], body["sequence"]) == (3, 3)
    pem = service.client.get("/v1/keys").json()["keys"][0]["public_key_pem"]
    assert verify_head(body, pem) == []
    chain = auditor.get("/v1/audit-chain").json()
    assert [e["integrity"]["sequence"] for e in chain] == [1, 2, 3]
    assert body["sha256"] == chain[-1]["integrity"]["sha256"]

    key_path = tmp_path / "key.pem"
    key_path.write_text(pem)
    (tmp_path / "head.json").write_bytes(head.content)
    (tmp_path / "chain.json").write_text(json.dumps(chain))
    assert verify_file(tmp_path / "chain.json", key_path, head_path=tmp_path / "head.json") == []
    (tmp_path / "short.json").write_text(json.dumps(chain[:-1]))
    problems = verify_file(tmp_path / "short.json", key_path, head_path=tmp_path / "head.json")
    assert any("does not reach the signed head" in p for p in problems), problems

    schema = service.client.get("/openapi.json").json()
    assert "ChainHead" in schema["components"]["schemas"]
    assert service.client_for("requester").get("/v1/audit-chain/head").status_code == 403
