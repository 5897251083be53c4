"""After an erasure, no trace of the erased files' names is left: not in any column of any
table (the whole schema, reflected), on SQLite and on PostgreSQL, nor in the SQLite file's
bytes after a checkpoint, nor in the logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from app.db.models import Sample
from app.db.session import session_scope

IDEMPOTENCY_KEY = "ticket-of-alice@example.com"


def _victims(dataset_id: int) -> list[str]:
    """Two training images the model saw (rel paths)."""
    with session_scope() as session:
        rows = session.scalars(
            select(Sample.rel_path)
            .where(Sample.dataset_id == dataset_id, Sample.split == "train")
            .order_by(Sample.sha256)
            .limit(2)
        ).all()
    return [str(r) for r in rows]


def _scan(database_url: str, needles: list[str]) -> list[str]:
    """Every (table, column) holding one of ``needles``, over every row of every table."""
    engine = create_engine(database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    found = []
    with engine.connect() as connection:
        assert len(metadata.tables) >= 10
        for table in metadata.tables.values():
            for row in connection.execute(select(table)).mappings():
                for column, value in row.items():
                    hits = [n for n in needles if value is not None and n in str(value)]
                    found.extend(f"{table.name}.{column}: {n}" for n in hits)
    engine.dispose()
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_erased_name_is_left_anywhere(
    backend: str,
    request: pytest.FixtureRequest,
    tiny_dataset: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service: Any = request.getfixturevalue(
        f"{'sqlite' if backend == 'sqlite' else 'postgres'}_service"
    )
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], shards=2, slices=1, epochs_per_slice=1)
    victims = _victims(dataset["id"])
    names = [Path(v).name for v in victims]
    needles = [*victims, *names, IDEMPOTENCY_KEY]
    assert _scan(service.settings.database_url, needles), "the scan must see the names first"

    submitted = service.submit(
        {"model": model["id"], "filenames": victims, "external_id": "alice"},
        **{"Idempotency-Key": IDEMPOTENCY_KEY},
    )
    service.run_worker(model["id"])
    done = service.client.get(f"/v1/deletion-requests/{submitted['id']}").json()
    assert done["status"] == "completed", done
    assert not any((tiny_dataset / v).exists() for v in victims)

    assert _scan(service.settings.database_url, needles) == []
    for needle in needles:
        assert needle not in caplog.text
    if backend == "sqlite":
        database = Path(service.settings.database_url.removeprefix("sqlite:///"))
        engine = create_engine(service.settings.database_url)
        with engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        engine.dispose()
        for path in (database, Path(f"{database}-wal")):
            if path.exists():
                data = path.read_bytes()
                assert [n for n in needles if n.encode() in data] == [], path.name
