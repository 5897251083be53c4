"""The periodic sweep: the database is the source of truth, so anything it says is pending
but that no live task is working on gets sent again. Every step it re-sends is idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import (
    DeletionRequest,
    Model,
    ModelVersion,
    RequestStatus,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.db.session import session_scope
from app.settings import get_settings
from worker.flows.common import is_stale, log, now
from worker.flows.filters import stalled_jobs


@dataclass
class SweepActions:
    train_shards: list[tuple[int, int]] = field(default_factory=list)
    finalize_versions: list[int] = field(default_factory=list)
    complete_versions: list[int] = field(default_factory=list)
    process_models: list[int] = field(default_factory=list)
    filter_jobs: list[int] = field(default_factory=list)


def find_stalled_work() -> SweepActions:
    stale_after = get_settings().stale_task_after_s
    actions = SweepActions()
    with session_scope() as session:
        building = session.scalars(
            select(ModelVersion).where(
                ModelVersion.status.in_((VersionStatus.TRAINING, VersionStatus.EVALUATING))
            )
        ).all()
        for version in building:
            _sweep_building_version(session, version, stale_after, actions)
        _sweep_pending_requests(session, stale_after, actions)
        building_models = {v.model_id for v in building}
        stuck = session.scalars(select(Model).where(Model.active_batch.is_not(None))).all()
        for model in stuck:
            if is_stale(model.heartbeat_at, 4 * stale_after) and model.id not in building_models:
                _recover_stuck_model(session, model, actions)
    actions.filter_jobs = stalled_jobs(stale_after)
    return actions


def _sweep_building_version(
    session: Session, version: ModelVersion, stale_after: float, actions: SweepActions
) -> None:
    """Re-send the finalizer of a version whose shards are done, or whose finalizer died, and
    hand stale shards back as pending."""
    shards = session.scalars(
        select(VersionShard).where(VersionShard.version_id == version.id)
    ).all()
    unfinished = [s for s in shards if s.status != ShardStatus.DONE]
    if version.status == VersionStatus.EVALUATING:
        if is_stale(version.started_at, stale_after) and all(
            is_stale(s.updated_at, stale_after) for s in shards
        ):
            # A finalizer died mid-way: evaluation is re-runnable from scratch.
            version.status = VersionStatus.TRAINING
            actions.finalize_versions.append(version.id)
        return
    if not unfinished:
        actions.finalize_versions.append(version.id)
    for state in unfinished:
        if is_stale(state.updated_at, stale_after):
            # A running shard that stopped reporting has lost its worker: hand it back
            # as pending. The fresh timestamp limits re-sends to one per stale period.
            state.status = ShardStatus.PENDING
            state.updated_at = now()
            actions.train_shards.append((version.id, state.shard))


def _sweep_pending_requests(session: Session, stale_after: float, actions: SweepActions) -> None:
    """Models with requests waiting too long and no batch running get processed again."""
    pending = session.execute(
        select(DeletionRequest.model_id, DeletionRequest.enqueued_at, DeletionRequest.created_at)
        .join(Model, Model.id == DeletionRequest.model_id)
        .where(
            DeletionRequest.status.in_((RequestStatus.RECEIVED, RequestStatus.QUEUED)),
            Model.active_batch.is_(None),
        )
    ).all()
    for model_id, enqueued_at, created_at in pending:
        if (
            is_stale(enqueued_at or created_at, stale_after)
            and model_id not in actions.process_models
        ):
            actions.process_models.append(model_id)


def _recover_stuck_model(session: Session, model: Model, actions: SweepActions) -> None:
    """A model whose batch lock outlived its heartbeat: finish the batch or release the lock."""
    unfinished_version = session.scalar(
        select(DeletionRequest.result_version_id)
        .join(ModelVersion, ModelVersion.id == DeletionRequest.result_version_id)
        .where(
            DeletionRequest.model_id == model.id,
            # The stuck batch's own requests: an earlier one may wait, verifying, for files
            # another model still trains on (worker.flows.shared_erasure).
            DeletionRequest.batch_id == model.active_batch,
            DeletionRequest.status.in_((RequestStatus.RUNNING, RequestStatus.VERIFYING)),
            ModelVersion.status == VersionStatus.READY,
        )
        .limit(1)
    )
    if unfinished_version is not None:
        # The new version was made but its worker died while auditing or erasing:
        # finish that batch (every step of it is re-runnable). The fresh heartbeat
        # limits re-sends to one per stale period.
        log.warning("model %s: resuming the completion of a finished retrain", model.id)
        model.heartbeat_at = now()
        actions.complete_versions.append(unfinished_version)
        return
    # The batch died before its version was laid out: free the model.
    log.warning("model %s: releasing a batch lock with no live work", model.id)
    model.active_batch = None
    session.execute(
        update(DeletionRequest)
        .where(
            DeletionRequest.model_id == model.id,
            DeletionRequest.status == RequestStatus.RUNNING,
            DeletionRequest.result_version_id.is_(None),
        )
        .values(status=RequestStatus.QUEUED)
    )
    actions.process_models.append(model.id)
