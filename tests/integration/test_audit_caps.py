"""The audit scores bounded sets: the caps come from the settings and the report records them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.db.models import Sample
from app.db.session import session_scope
from tests.conftest import Configure, InProcessService


def test_the_audit_sets_are_capped_by_the_settings_and_recorded(
    configure: Configure, tiny_dataset: Path
) -> None:
    service = InProcessService(configure(audit_max_nonmembers="5", audit_max_retain="7"))
    try:
        dataset = service.register_dataset(tiny_dataset)
        model = service.train_model(dataset["id"])
        with session_scope() as session:
            names = session.scalars(
                select(Sample.rel_path)
                .where(Sample.dataset_id == dataset["id"], Sample.split == "train")
                .order_by(Sample.id)
                .limit(3)
            ).all()
        done = service.forget({"model": model["id"], "filenames": [str(n) for n in names]})
        assert done["status"] == "completed", done
        envelope = service.client.get(f"/v1/deletion-requests/{done['id']}/report").json()
        sets = envelope["report"]["membership_inference"]["evaluation_sets"]
        assert sets["caps"] == {"forget": 500, "test": 5, "retain": 7}
        assert sets["sizes"] == {"forget": 3, "test": 5, "retain": 7}
    finally:
        service.close()
