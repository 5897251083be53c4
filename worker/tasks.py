"""Celery tasks: thin wrappers that call the flows and chain the next step."""

from __future__ import annotations

import traceback

from celery import group

from app.core.privacy import redact_paths
from app.core.tasks import (
    TASK_COMPLETE_BATCH,
    TASK_DELIVER_WEBHOOK,
    TASK_FINALIZE_VERSION,
    TASK_IMPORT_MODEL,
    TASK_PROCESS_MODEL,
    TASK_START_VERSION,
    TASK_SWEEP,
    TASK_TRAIN_FILTERS,
    TASK_TRAIN_SHARD,
    TASK_UNLEARN_SHARD,
)
from worker.backbones.heads import feature_memo
from worker.celery_app import celery_app
from worker.flows import deletion, training
from worker.flows.common import log
from worker.flows.sweep import find_stalled_work


def _audit_hook() -> deletion.AuditHook | None:
    from worker.audit.publish import publish_report

    return publish_report


def _trace() -> str:
    return redact_paths(traceback.format_exc())


def _fail(version_id: int, exc: BaseException) -> None:
    reason = redact_paths(f"{type(exc).__name__}: {exc}")
    log.error("version %s failed: %s\n%s", version_id, reason, _trace())
    training.fail_version(version_id, reason)
    model_id = deletion.fail_batch(version_id, reason)
    if model_id is not None:
        process_model.delay(model_id)


def _shard_step(version_id: int):  # type: ignore[no-untyped-def]
    """The task that builds one constituent of this version: training or unlearning."""
    from app.db.models import ModelVersion
    from app.db.session import session_scope
    from worker.unlearning.base import Runner
    from worker.unlearning.registry import get_method

    with session_scope() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        exact = version.method == "train" or get_method(version.method).runner == Runner.SISA
    return train_shard if exact else unlearn_shard


@celery_app.task(name=TASK_START_VERSION)
def start_version(version_id: int) -> None:
    """Train (or unlearn) every constituent that needs it, as a group so several workers
    share them; the last one to finish triggers the finalization."""
    from app.db.session import session_scope

    with session_scope() as session:
        shards = training.shards_to_train(session, version_id)
    if shards:
        step = _shard_step(version_id)
        group(step.s(version_id, shard) for shard in shards).apply_async()
    else:
        finalize_version.delay(version_id)


@celery_app.task(name=TASK_TRAIN_SHARD)
def train_shard(version_id: int, shard: int) -> None:
    try:
        done = training.train_shard(version_id, shard)
    except Exception as exc:
        _fail(version_id, exc)
        return
    if done:
        finalize_version.delay(version_id)


@celery_app.task(name=TASK_UNLEARN_SHARD)
def unlearn_shard(version_id: int, shard: int) -> None:
    """Run an approximate unlearning method on one constituent."""
    from worker.flows import approximate

    try:
        done = approximate.unlearn_shard(version_id, shard)
    except Exception as exc:
        _fail(version_id, exc)
        return
    if done:
        finalize_version.delay(version_id)


def _fail_completion(version_id: int, exc: BaseException) -> None:
    """Fail the batch's requests (their files stay until a new request erases them) and free
    the model. The new version stays current only if its erasure had already begun."""
    reason = redact_paths(
        f"the new version was built but its audit or erasure failed: {type(exc).__name__}: {exc}"
    )
    log.error("version %s: %s\n%s", version_id, reason, _trace())
    model_id = deletion.fail_batch(version_id, reason)
    if model_id is not None:
        process_model.delay(model_id)


@celery_app.task(name=TASK_FINALIZE_VERSION)
@feature_memo()
def finalize_version(version_id: int) -> None:
    try:
        version = training.finalize_version(version_id)
    except Exception as exc:
        _fail(version_id, exc)
        return
    if version is None or version.reason != "deletion":
        return
    try:
        deletion.complete_batch(version, _audit_hook())
    except Exception as exc:
        _fail_completion(version_id, exc)
        return
    process_model.delay(version.model_id)  # requests that arrived while this batch ran


@celery_app.task(name=TASK_COMPLETE_BATCH)
@feature_memo()
def complete_batch(version_id: int) -> None:
    """Resume the audit and erasure of a ready version whose worker died before finishing."""
    try:
        model_id = deletion.resume_completion(version_id, _audit_hook())
    except Exception as exc:
        _fail_completion(version_id, exc)
        return
    if model_id is not None:
        process_model.delay(model_id)


@celery_app.task(name=TASK_PROCESS_MODEL)
def process_model(model_id: int) -> None:
    version_id = deletion.start_batch(model_id)
    if version_id is not None:
        start_version(version_id)


@celery_app.task(name=TASK_SWEEP)
def sweep() -> dict[str, int]:
    actions = find_stalled_work()
    for version_id, shard in actions.train_shards:
        _shard_step(version_id).delay(version_id, shard)
    for version_id in actions.finalize_versions:
        finalize_version.delay(version_id)
    for version_id in actions.complete_versions:
        complete_batch.delay(version_id)
    for model_id in actions.process_models:
        process_model.delay(model_id)
    for job_id in actions.filter_jobs:
        train_filters.delay(job_id)
    resent = _resend_webhooks()
    return {
        "webhook_pairs": resent,
        "train_shards": len(actions.train_shards),
        "finalize_versions": len(actions.finalize_versions),
        "complete_versions": len(actions.complete_versions),
        "process_models": len(actions.process_models),
        "filter_jobs": len(actions.filter_jobs),
    }


@celery_app.task(name=TASK_TRAIN_FILTERS)
def train_filters(job_id: int) -> None:
    """Train a model's per-class weight filters (a model-level job, no batch lock)."""
    from worker.flows import filters

    try:
        filters.run_job(job_id)
    except filters.LostJobError as exc:
        log.warning("%s", exc)
    except Exception as exc:
        reason = redact_paths(f"{type(exc).__name__}: {exc}")
        log.error("weight filter job %s failed: %s\n%s", job_id, reason, _trace())
        filters.fail_job(job_id, reason)


@celery_app.task(name=TASK_IMPORT_MODEL)
def import_model(version_id: int) -> None:
    """Validate, convert and evaluate the weights of a model registered by import."""
    from worker.flows import model_import

    try:
        model_import.import_model(version_id)
    except Exception as exc:
        reason = redact_paths(f"{type(exc).__name__}: {exc}")
        log.error("imported version %s failed: %s", version_id, reason)
        training.fail_version(version_id, reason)


@celery_app.task(name=TASK_DELIVER_WEBHOOK, bind=True)
def deliver_webhook(self, webhook_id: int, request_id: str) -> None:  # type: ignore[no-untyped-def]
    """Send one request's pending events to one webhook, then schedule the next try."""
    from worker import webhooks

    backoff = webhooks.deliver_pending(webhook_id, request_id)
    if backoff is not None and not self.request.is_eager:
        # Eagerly (tests) this would recurse at once; the sweep sends it again when due.
        deliver_webhook.apply_async((webhook_id, request_id), countdown=backoff)


def _resend_webhooks() -> int:
    from worker import webhooks

    pairs = webhooks.due_pairs()
    for webhook_id, request_id in pairs:
        deliver_webhook.delay(webhook_id, request_id)
    return len(pairs)
