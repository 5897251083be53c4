"""The one protocol every per-constituent task follows (training, approximate unlearning).

A task *claims* its shard row: done already -> nothing to do; running with a fresh heartbeat ->
another task owns it; otherwise (pending, failed or stale) this task takes it over. Progress
writes refresh the heartbeat; a final write marks the shard done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    Dataset,
    Model,
    ModelVersion,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.db.session import session_scope
from app.settings import get_settings
from worker.flows.common import is_stale, log, now, touch_model

PROGRESS_EVERY_S = 2.0


@dataclass
class ShardClaim:
    """A shard this task now owns (its row is marked running in the caller's session)."""

    state: VersionShard
    version: ModelVersion
    model: Model
    """With ``model.dataset`` loaded."""


def load_model(session: Session, model_id: int) -> Model:
    """The model with its dataset attached (both usable after the session closes)."""
    model = session.get(Model, model_id)
    assert model is not None
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    model.dataset = dataset
    return model


def claim_shard(
    session: Session, version_id: int, shard: int, *, activity: str
) -> ShardClaim | bool:
    """Take the shard over, or say why not: ``True`` when it is done already, ``False`` when
    a live task owns it or the version failed."""
    state = session.get(VersionShard, (version_id, shard))
    version = session.get(ModelVersion, version_id)
    if state is None or version is None or version.status == VersionStatus.FAILED:
        return False
    if state.status == ShardStatus.DONE:
        return True
    if state.status == ShardStatus.RUNNING and not is_stale(
        state.updated_at, get_settings().stale_task_after_s
    ):
        log.info("version %s shard %s is being %s elsewhere", version_id, shard, activity)
        return False
    # Take the row only as it was read: of two copies of this task claiming at once (a broker
    # redelivery, a sweep re-send), the later one finds it changed and backs off (PostgreSQL
    # makes it wait for the first one's commit, then re-checks the condition).
    taken = session.execute(
        update(VersionShard)
        .where(
            VersionShard.version_id == version_id,
            VersionShard.shard == shard,
            VersionShard.status == state.status,
            VersionShard.updated_at == state.updated_at,
        )
        .values(status=ShardStatus.RUNNING, updated_at=now())
        .execution_options(synchronize_session=False)
    )
    if not taken.rowcount:  # type: ignore[attr-defined]
        log.info("version %s shard %s was just claimed by another task", version_id, shard)
        return False
    session.refresh(state)
    return ShardClaim(state=state, version=version, model=load_model(session, version.model_id))


def detach(session: Session, model: Model) -> None:
    """Keep the model and its dataset readable after the session ends (long runs follow)."""
    session.expunge(model)
    session.expunge(model.dataset)


def update_shard(session: Session, version_id: int, shard: int, **values: Any) -> None:
    session.execute(
        update(VersionShard)
        .where(VersionShard.version_id == version_id, VersionShard.shard == shard)
        .values(**values, updated_at=now())
    )


def mark_shard_done(session: Session, version_id: int, shard: int, **values: Any) -> None:
    update_shard(session, version_id, shard, status=ShardStatus.DONE, **values)


def update_checkpoint(
    session: Session, version_id: int, shard: int, slice_: int, **values: Any
) -> None:
    session.execute(
        update(Checkpoint)
        .where(
            Checkpoint.version_id == version_id,
            Checkpoint.shard == shard,
            Checkpoint.slice == slice_,
        )
        .values(**values)
    )


class ShardProgress:
    """Throttled progress writes (they also refresh the heartbeats), so a fast loop is not
    slowed down by the database."""

    def __init__(self, version_id: int, model_id: int, shard: int) -> None:
        self.version_id, self.model_id, self.shard = version_id, model_id, shard
        self.last = 0.0

    def batches_of(self, slice_: int) -> Callable[[int, int], None]:
        """An ``on_batch(done, total)`` callback for one slice's training."""
        return lambda done, total: self(slice_, done / max(total, 1))

    def __call__(self, slice_: int, fraction: float) -> None:
        moment = time.monotonic()
        if moment - self.last < PROGRESS_EVERY_S and fraction < 1.0:
            return
        self.last = moment
        with session_scope() as session:
            update_shard(
                session,
                self.version_id,
                self.shard,
                current_slice=slice_,
                slice_fraction=min(1.0, max(0.0, fraction)),
            )
            touch_model(session, self.model_id)
