"""A model's weight-filter jobs: start one, read the latest, and check that a
``weight_filtering`` request has filters to apply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.methods.weight_filtering import FilterTrainingConfig
from app.db.filters import FilterStatus, WeightFilterJob
from app.db.models import Model, ModelStatus, ModelVersion
from app.services.errors import Conflict, InvalidInput, NotFound

RUNNING = (FilterStatus.QUEUED, FilterStatus.TRAINING)


def latest_job(session: Session, model_id: int) -> WeightFilterJob | None:
    return session.scalar(
        select(WeightFilterJob)
        .where(WeightFilterJob.model_id == model_id)
        .order_by(WeightFilterJob.id.desc())
        .limit(1)
    )


def training_config(raw: dict[str, Any] | None) -> FilterTrainingConfig:
    try:
        return FilterTrainingConfig.model_validate(raw or {})
    except pydantic.ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:20]
        )
        raise InvalidInput(f"the filter training configuration is not valid: {fields}") from None


def start_job(session: Session, model: Model, raw: dict[str, Any] | None) -> WeightFilterJob:
    """Store a queued job for the model's current version (the caller commits, then enqueues).
    Ready filters of the model are superseded by the new job once it is ready."""
    config = training_config(raw)
    if model.status != ModelStatus.READY or model.current_version_id is None:
        raise Conflict(f"model {model.name!r} is {model.status}; filters need a ready model")
    latest = latest_job(session, model.id)
    if latest is not None and latest.status in RUNNING:
        raise Conflict(
            f"model {model.name!r} already has weight filters {latest.status} (job {latest.id})"
        )
    version = session.get(ModelVersion, model.current_version_id)
    assert version is not None
    classes = [c for c in model.dataset.classes if c not in set(version.retired_classes)]
    if len(classes) < 2:
        raise Conflict(f"model {model.name!r} holds fewer than two classes; nothing to filter")
    job = WeightFilterJob(
        model_id=model.id,
        trained_on_version_id=version.id,
        version_id=version.id,
        status=FilterStatus.QUEUED,
        config=config.model_dump(mode="json"),
        classes=classes,
        accuracy={},
        shards={},
        progress=0.0,
        train_seconds=0.0,
        attempts=0,
    )
    session.add(job)
    session.flush()
    return job


def check_filters_for(
    session: Session, model: Model, version: ModelVersion, classes: Sequence[str]
) -> WeightFilterJob:
    """The ready filters a ``weight_filtering`` request on ``classes`` will apply; 422 naming
    why when there are none."""
    latest = latest_job(session, model.id)
    hint = f"train them first with POST /v1/models/{model.id}/filters"
    if latest is None:
        raise InvalidInput(
            f"method 'weight_filtering' needs trained weight filters: model "
            f"{model.name!r} has none; {hint}"
        )
    if latest.status != FilterStatus.READY:
        raise InvalidInput(
            f"method 'weight_filtering' needs ready weight filters: model {model.name!r}'s "
            f"latest filters are {latest.status}"
            + (f" ({latest.status_reason})" if latest.status_reason else "")
            + ("; wait for them" if latest.status in RUNNING else f"; {hint}")
        )
    if latest.version_id != version.id:
        raise InvalidInput(
            f"method 'weight_filtering': model {model.name!r}'s filters were trained for "
            f"another version than the current one; {hint}"
        )
    missing = sorted(set(classes) - set(latest.classes))
    if missing:
        raise InvalidInput(f"method 'weight_filtering': the filters hold no rows for {missing}")
    return latest


def job_view(session: Session, job: WeightFilterJob) -> dict[str, Any]:
    numbers = dict(
        session.execute(
            select(ModelVersion.id, ModelVersion.number).where(
                ModelVersion.id.in_([job.version_id, job.trained_on_version_id])
            )
        ).all()
    )
    return {
        "id": job.id,
        "model_id": job.model_id,
        "status": job.status,
        "status_reason": job.status_reason,
        "progress": {"phase": job.phase or job.status, "percent": round(100 * job.progress, 1)},
        "trained_on_version": numbers.get(job.trained_on_version_id),
        "applies_to_version": numbers.get(job.version_id),
        "classes": list(job.classes),
        "config": dict(job.config),
        "accuracy": dict(job.accuracy),
        "train_seconds": round(float(job.train_seconds or 0.0), 3),
        "constituents": dict(job.shards),
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def read_job(session: Session, model: Model) -> dict[str, Any]:
    job = latest_job(session, model.id)
    if job is None:
        raise NotFound(f"model {model.name!r} has no weight filters; POST to create them")
    return job_view(session, job)
