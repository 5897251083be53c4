"""Two copies of one shard task claiming the shard at the same moment (a broker redelivery, a
sweep re-send): only one may win, on the real databases."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from app.db.models import Dataset, Model, ModelVersion, VersionShard
from app.db.session import get_sessionmaker, session_scope
from worker.flows.shards import ShardClaim, claim_shard


def _shard() -> int:
    with session_scope() as session:
        dataset = Dataset(
            name="d", root="/nowhere", classes=["a"], channels=1, has_test_folder=False
        )
        session.add(dataset)
        session.flush()
        model = Model(name="m", dataset_id=dataset.id, architecture="small_cnn", config={})
        session.add(model)
        session.flush()
        version = ModelVersion(model_id=model.id, number=1, reason="initial", method="train")
        session.add(version)
        session.flush()
        session.add(VersionShard(version_id=version.id, shard=0, restart_slice=0))
        return version.id


def _waits_on(session) -> bool:  # type: ignore[no-untyped-def]
    """Whether another database session waits on a lock this one holds."""
    # Activity views are a snapshot kept for the whole transaction unless cleared.
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    return bool(
        session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
        ).scalar_one()
    )


def test_a_shard_claimed_twice_at_once_is_won_once(postgres_service) -> None:
    """The first claim is made and sent but not yet committed when the second arrives: the
    second must end up refused once the first commits, not take the shard over as well."""
    version_id = _shard()
    first = get_sessionmaker()()
    try:
        won = claim_shard(first, version_id, 0, activity="trained")
        assert isinstance(won, ShardClaim)
        first.flush()
        outcome: dict[str, object] = {}

        def second() -> None:
            with session_scope() as session:
                outcome["claim"] = claim_shard(session, version_id, 0, activity="trained")

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        # The second either waits on the first's row lock or has already decided.
        while thread.is_alive() and not _waits_on(first):
            assert time.monotonic() < deadline, "the second claim neither waited nor finished"
            time.sleep(0.01)
        first.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        first.close()
    assert outcome["claim"] is False, outcome


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_claims_one_after_another(request, database: str) -> None:
    request.getfixturevalue(f"{database}_service")
    version_id = _shard()
    with session_scope() as session:
        assert isinstance(claim_shard(session, version_id, 0, activity="trained"), ShardClaim)
    with session_scope() as session:  # running with a fresh heartbeat: someone else's
        assert claim_shard(session, version_id, 0, activity="trained") is False
    with session_scope() as session:
        session.execute(
            text("UPDATE version_shards SET status = 'done' WHERE version_id = :v"),
            {"v": version_id},
        )
    with session_scope() as session:
        assert claim_shard(session, version_id, 0, activity="trained") is True
