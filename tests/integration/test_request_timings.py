"""The service records each request's phase timings itself: shown by the API, in seconds."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.db.models import Sample
from app.db.session import session_scope


def test_a_completed_request_shows_its_phase_timings(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    with session_scope() as session:
        rel_path = session.scalars(
            select(Sample.rel_path)
            .where(Sample.dataset_id == dataset["id"], Sample.split == "train")
            .order_by(Sample.id)
        ).first()
    assert rel_path is not None
    name = rel_path.removeprefix("train/")
    done = service.forget({"model": model["id"], "filenames": [name]})
    assert done["status"] == "completed", done
    timings = done["timings"]
    for phase in ("queued_s", "claim_s", "evaluation_s", "audit_s", "erasure_s", "total_s"):
        assert isinstance(timings[phase], float) and timings[phase] >= 0, (phase, timings)
    # Exactly the shards the plan named were retrained, each with its own time.
    planned = {str(s["shard"]) for s in done["plan"]["affected_shards"]}
    assert set(timings["retrain_s"]) == planned
    assert all(seconds > 0 for seconds in timings["retrain_s"].values())
    parts = timings["claim_s"] + timings["evaluation_s"] + timings["audit_s"]
    assert parts + sum(timings["retrain_s"].values()) <= timings["total_s"] + 1e-6
    # The audit report's cost section carries the same record.
    report = service.client.get(f"/v1/deletion-requests/{done['id']}/report").json()
    phases = report["report"]["cost"]["phases"] if "report" in report else report["cost"]["phases"]
    assert phases["retrain_s"] == timings["retrain_s"]
    assert phases["claim_s"] == timings["claim_s"]
    assert phases["audit_s"] >= 0
