"""Where a model's weight filters live and when they go.

A filter job keeps one blob per constituent, keyed by the job and the checkpoint the filters
apply to. A ``weight_filtering`` version writes the remaining rows (without the forgotten
classes) under its own checkpoints' keys; once it is current, the parent's blobs, which still
hold the forgotten classes' rows and were trained on their images, are deleted. Any other new
version (a retrain, another method, a file deletion) leaves the filters matching weights no
longer served, trained on data that may now be erased: all their blobs are deleted and the job
is marked purged.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.store_namespaces import WEIGHT_FILTERS
from app.db.filters import FilterStatus, WeightFilterJob
from app.db.models import Checkpoint, Model, ModelVersion
from worker.constituents import final_checkpoints
from worker.flows.common import log, now, store
from worker.unlearning.filtering import FilterSet

LIVE = (FilterStatus.QUEUED, FilterStatus.TRAINING, FilterStatus.READY)


def filter_key(job_id: int, checkpoint_key: str) -> str:
    return hashlib.sha256(f"weight-filters:{job_id}:{checkpoint_key}".encode()).hexdigest()


def save_filters(job_id: int, checkpoint_key: str, filters: FilterSet) -> str:
    key = filter_key(job_id, checkpoint_key)
    store().put(WEIGHT_FILTERS, key, filters.to_bytes())
    return key


def load_filters(job_id: int, checkpoint_key: str) -> FilterSet:
    return FilterSet.from_bytes(store().get(WEIGHT_FILTERS, filter_key(job_id, checkpoint_key)))


def ready_job_for(session: Session, model_id: int, version_id: int) -> WeightFilterJob | None:
    """The model's ready filters that apply to ``version_id``, if any."""
    return session.scalar(
        select(WeightFilterJob)
        .where(
            WeightFilterJob.model_id == model_id,
            WeightFilterJob.status == FilterStatus.READY,
            WeightFilterJob.version_id == version_id,
        )
        .order_by(WeightFilterJob.id.desc())
        .limit(1)
    )


def _version_keys(session: Session, model: Model, version_id: int) -> set[str]:
    version = session.get(ModelVersion, version_id)
    if version is None:
        return set()
    return {c.key for c in final_checkpoints(session, version, model.recipe.slices)}


def delete_blobs(session: Session, job: WeightFilterJob) -> int:
    """Delete every blob the job may have written: for each version of the model (attempts
    that were escalated or refused included), under its final checkpoints' keys."""
    keys = set(
        session.scalars(
            select(Checkpoint.key)
            .join(ModelVersion, ModelVersion.id == Checkpoint.version_id)
            .where(ModelVersion.model_id == job.model_id)
        ).all()
    )
    return sum(store().delete(WEIGHT_FILTERS, filter_key(job.id, k)) for k in keys)


def purge_job(session: Session, job: WeightFilterJob, reason: str) -> None:
    deleted = delete_blobs(session, job)
    job.status = FilterStatus.PURGED
    job.status_reason = reason
    job.finished_at = job.finished_at or now()
    log.info(
        "weight filters %s of model %s purged (%s blobs): %s", job.id, job.model_id, deleted, reason
    )


def after_version_current(session: Session, version: ModelVersion) -> None:
    """Keep the model's filters in step with the version just made current."""
    model = session.get(Model, version.model_id)
    assert model is not None
    jobs = session.scalars(
        select(WeightFilterJob).where(
            WeightFilterJob.model_id == version.model_id,
            WeightFilterJob.status.in_(LIVE),
            WeightFilterJob.version_id != version.id,
        )
    ).all()
    for job in jobs:
        if (
            job.status == FilterStatus.READY
            and version.method == "weight_filtering"
            and job.version_id == version.parent_id
        ):
            _move_to(session, model, job, version)
        elif job.status == FilterStatus.READY:
            purge_job(
                session,
                job,
                f"version {version.number} ({version.method}) replaced the weights the "
                "filters were trained for",
            )
        # A job still training notices the new version when it finishes, and purges itself.


def _move_to(session: Session, model: Model, job: WeightFilterJob, version: ModelVersion) -> None:
    """The remaining rows now apply to ``version``; the parent's blobs (holding the forgotten
    classes' rows) are deleted, except where a constituent was kept as it was."""
    old = _version_keys(session, model, job.version_id)
    new = _version_keys(session, model, version.id)
    for key in old - new:
        store().delete(WEIGHT_FILTERS, filter_key(job.id, key))
    job.version_id = version.id
    retired = set(version.retired_classes)
    job.classes = [c for c in job.classes if c not in retired]
    log.info(
        "weight filters %s of model %s now apply to version %s (%s classes left)",
        job.id,
        model.id,
        version.number,
        len(job.classes),
    )
