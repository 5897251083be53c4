"""Deletion requests: claim and coalesce them per model, retrain, audit, then erase the data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelStatus,
    ModelVersion,
    RequestStatus,
    Sample,
    SampleState,
    VersionStatus,
    as_utc,
)
from app.db.session import session_scope
from app.services import events
from app.services.versions import create_child_version
from app.settings import get_settings
from worker.backbones.embeddings import purge_embeddings
from worker.constituents import purge_version
from worker.erasure import check_files, forget_samples, pending_samples, unlink_files
from worker.flows import shared_erasure as shared
from worker.flows.common import log, now, store, touch_model
from worker.flows.filter_store import after_version_current
from worker.flows.guards import judge_new_version
from worker.flows.timings import add_phase, finish, stopwatch
from worker.flows.verify import escalate_batch, refusal_reason, verify_batch
from worker.predictions import delete_checkpoint_blobs, purge_dataset_predictions
from worker.samples import purge_dataset_cache
from worker.unlearning.base import Runner
from worker.unlearning.registry import get_method

CLAIMABLE = (RequestStatus.RECEIVED, RequestStatus.QUEUED)
# Exact file deletions with the same method can share one retrain; anything else runs alone.
COALESCIBLE_METHODS = {"sisa", "retrain"}

# Called with (session, request, version) after retraining and before the data is erased, so
# the audit can still measure the forgotten samples. Set by worker.audit.publish.
AuditHook = Callable[[Session, DeletionRequest, ModelVersion], None]


def claim_model(session: Session, model_id: int) -> str | None:
    """Take the model's batch lock with a conditional UPDATE; None if another batch holds it."""
    token = str(uuid.uuid4())
    result = session.execute(
        update(Model)
        .where(
            Model.id == model_id,
            Model.active_batch.is_(None),
            Model.status == ModelStatus.READY,
        )
        .values(active_batch=token, heartbeat_at=now())
    )
    session.commit()
    return token if result.rowcount else None  # type: ignore[attr-defined]


def release_model(session: Session, model_id: int, token: str) -> None:
    session.execute(
        update(Model)
        .where(Model.id == model_id, Model.active_batch == token)
        .values(active_batch=None)
    )


def _claim_batch(session: Session, model_id: int, token: str) -> list[DeletionRequest]:
    pending = list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.model_id == model_id, DeletionRequest.status.in_(CLAIMABLE))
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
        ).all()
    )
    if not pending:
        return []
    first = pending[0]
    if first.method in COALESCIBLE_METHODS and first.target_kind == "files":
        batch = [
            r for r in pending if r.method == first.method and r.target_kind == first.target_kind
        ]
    else:
        batch = [first]
    claimed = []
    for request in batch:
        result = session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == request.id, DeletionRequest.status.in_(CLAIMABLE))
            .values(status=RequestStatus.RUNNING, batch_id=token, status_reason=None)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            claimed.append(request)
    return claimed


def batch_sample_ids(session: Session, request_ids: list[str]) -> list[int]:
    return sorted(
        set(
            session.scalars(
                select(DeletionTarget.sample_id)
                .join(Sample, Sample.id == DeletionTarget.sample_id)
                .where(
                    DeletionTarget.request_id.in_(request_ids),
                    Sample.state == SampleState.ACTIVE,
                )
            ).all()
        )
    )


def start_batch(model_id: int) -> int | None:
    """Claim the model, coalesce its pending requests and lay out the new version.

    Returns the id of the version to train, or None when there is nothing to do here.
    """
    began = time.perf_counter()
    with session_scope() as session:
        token = claim_model(session, model_id)
        if token is None:
            return None
        requests = _claim_batch(session, model_id, token)
        if not requests:
            release_model(session, model_id, token)
            return None
        model = session.get(Model, model_id)
        assert model is not None and model.current_version_id is not None
        parent = session.get(ModelVersion, model.current_version_id)
        assert parent is not None
        method = get_method(requests[0].method)
        deleted = batch_sample_ids(session, [r.id for r in requests])
        retired = sorted({c for r in requests for c in r.target_classes})
        approximate = method.runner != Runner.SISA
        if not approximate:
            deleted = sorted({*deleted, *shared.erased_in(session, parent.id)})
        version, plan = create_child_version(
            session,
            model,
            parent,
            deleted,
            method=method.name,
            full_retrain=method.name == "retrain",
            approximate=approximate,
            # A full retrain and an approximate method must never share keys with checkpoints
            # that an exact, cumulative training produced.
            salt=token if (method.name == "retrain" or approximate) else "",
            retired_classes=retired,
        )
        for request in requests:
            request.result_version_id = version.id
            request.base_version_id = parent.id
            request.plan = {
                **request.plan,
                **plan.to_dict(),
                "coalesced_with": sorted(r.id for r in requests if r.id != request.id),
            }
            waited = now() - as_utc(request.created_at)
            add_phase(request, "queued_s", round(waited.total_seconds(), 4))
            add_phase(request, "claim_s", round(time.perf_counter() - began, 4))
            events.record(
                session,
                request,
                "running",
                status=RequestStatus.RUNNING,
                version=version.number,
                shards_to_retrain=len(plan.affected),
            )
        log.info(
            "model %s: %s request(s) coalesced into version %s, %s shard(s) to retrain",
            model_id,
            len(requests),
            version.number,
            len(plan.affected),
        )
        return version.id


def purge_superseded_checkpoints(
    session: Session, version: ModelVersion, sample_ids: list[int]
) -> int:
    """Delete every older checkpoint of the model that was trained on an erased sample.

    Older versions stay on record (manifests, metrics, reports) but their weights that still
    encode the erased data are removed from the store.
    """
    keep = set(
        session.scalars(select(Checkpoint.key).where(Checkpoint.version_id == version.id)).all()
    )
    older = session.scalars(
        select(ModelVersion.id).where(
            ModelVersion.model_id == version.model_id, ModelVersion.id != version.id
        )
    ).all()
    purged = 0
    doomed: set[str] = set()
    for version_id in older:
        placements = session.execute(
            select(ManifestEntry.shard, ManifestEntry.slice).where(
                ManifestEntry.version_id == version_id, ManifestEntry.sample_id.in_(sample_ids)
            )
        ).all()
        earliest: dict[int, int] = {}
        for shard, slice_ in placements:
            earliest[shard] = min(earliest.get(shard, slice_), slice_)
        for shard, first in earliest.items():
            for checkpoint in session.scalars(
                select(Checkpoint).where(
                    Checkpoint.version_id == version_id,
                    Checkpoint.shard == shard,
                    Checkpoint.slice >= first,
                    Checkpoint.purged.is_(False),
                )
            ).all():
                checkpoint.purged = True
                purged += 1
                if checkpoint.key not in keep:
                    doomed.add(checkpoint.key)
    session.flush()
    for key in doomed:
        # Content keys are shared by identical trainings (another model on the same bytes,
        # an import of the same file): a blob goes only when no live record still needs it.
        still_used = session.scalar(
            select(Checkpoint.id)
            .where(Checkpoint.key == key, Checkpoint.purged.is_(False))
            .limit(1)
        )
        if still_used is None:
            delete_checkpoint_blobs(store(), key)
    return purged


def purge_dataset_checkpoints(session: Session, dataset_id: int, sample_ids: list[int]) -> int:
    """Erased samples leave no weights behind in any model of the dataset: each model's
    checkpoints trained on them, other than its current version's, are purged."""
    if not sample_ids:
        return 0
    purged = 0
    for current_id in session.scalars(
        select(Model.current_version_id).where(
            Model.dataset_id == dataset_id, Model.current_version_id.is_not(None)
        )
    ).all():
        current = session.get(ModelVersion, current_id)
        assert current is not None
        purged += purge_superseded_checkpoints(session, current, sample_ids)
    return purged


def _begin_verifying(version: ModelVersion) -> list[DeletionRequest]:
    with session_scope() as session:
        requests = list(
            session.scalars(
                select(DeletionRequest).where(
                    DeletionRequest.result_version_id == version.id,
                    # VERIFYING too: a completion cut off mid-audit is resumed by the sweep.
                    DeletionRequest.status.in_((RequestStatus.RUNNING, RequestStatus.VERIFYING)),
                )
            ).all()
        )
        for request in requests:
            request.status = RequestStatus.VERIFYING
    return requests


def _judge(version: ModelVersion, requests: list[DeletionRequest]) -> str | None:
    """The proof and guard rails, unless the version is already current: then they held and
    its erasure was under way when a worker died, so only the erasure is left to finish."""
    with session_scope() as session:
        model = session.get(Model, version.model_id)
        assert model is not None
        if model.current_version_id == version.id:
            return None
        return judge_new_version(session, session.merge(version), requests)


def refuse_batch(version: ModelVersion, requests: list[DeletionRequest], reason: str) -> None:
    """The new version failed its proof or a guard: it is never made current and its weights
    are purged, its requests fail with the reason, their files stay (a retry or a later request
    may erase them) and the model is freed."""
    with session_scope() as session:
        for request in requests:
            live = session.get(DeletionRequest, request.id)
            if live is not None and live.status == RequestStatus.VERIFYING:
                live.status = RequestStatus.FAILED
                live.status_reason = reason
                finish(live)
                events.record(session, live, "failed", reason=reason)
        live_version = session.get(ModelVersion, version.id)
        assert live_version is not None
        live_version.status = VersionStatus.FAILED
        live_version.status_reason = reason
        # The files stay for a retry, but not these weights: a retry builds a new version, and
        # a refused one may still encode the data (an approximate method, a failed proof).
        purge_version(session, store(), live_version)
        session.execute(update(Model).where(Model.id == version.model_id).values(active_batch=None))
    log.warning("model %s version %s refused: %s", version.model_id, version.number, reason)


def complete_batch(version: ModelVersion, audit: AuditHook | None) -> None:
    """After the new version is built: verify a class batch against its targets (a miss
    escalates or fails it), check its proof and guard rails, audit each request, then make it
    current and erase the data together, and release the model."""
    requests = _begin_verifying(version)
    verdict = verify_batch(version, requests)
    if verdict is not None and not verdict.met:
        if not escalate_batch(version, requests, verdict):
            refuse_batch(version, requests, refusal_reason(verdict))
        return
    refusal = _judge(version, requests)
    if refusal is not None:
        refuse_batch(version, requests, refusal)
        return
    for request in requests:
        with session_scope() as session:
            touch_model(session, version.model_id)  # an audit is live work, not a stalled batch
            live = session.get(DeletionRequest, request.id)
            assert live is not None
            version = session.merge(version)
            if audit is not None:
                with stopwatch() as audit_time:
                    audit(session, live, version)
                add_phase(live, "audit_s", audit_time["s"])
                events.record(
                    session, live, "audited", report_sha256=events.report_sha256(session, live.id)
                )
    erasure_began = time.perf_counter()
    erasing = erase_batch_files(version, requests)
    with session_scope() as session:
        # Re-read, not merge: the detached copies hold the state from before the audits.
        current = [session.get(DeletionRequest, r.id) for r in requests]
        counts = {r.id: forget_samples(session, r.id, erasing) for r in current if r is not None}
        held = shared.unerased_targets(session, list(counts))
        for request in (r for r in current if r is not None):
            count = counts[request.id]
            if held.get(request.id):
                shared.hold(session, request, version.number, count, held[request.id])
                continue
            request.status = RequestStatus.COMPLETED
            request.completed_at = now()
            request.status_reason = f"forgotten in version {version.number}; {count} files erased"
            events.record(
                session, request, "files_erased", status=RequestStatus.VERIFYING, files=count
            )
            events.record(
                session,
                request,
                "completed",
                version=version.number,
                manifest_sha256=version.manifest_sha256,
            )
        version = session.merge(version)
        model = session.get(Model, version.model_id)
        assert model is not None
        released = shared.complete_released(session, model.dataset_id)
        purged = purge_dataset_checkpoints(session, model.dataset_id, sorted(erasing))
        after_version_current(session, version)
        erased_hashes = set(
            session.scalars(select(Sample.sha256).where(Sample.id.in_(sorted(erasing)))).all()
        )
        purge_dataset_cache(get_settings(), model.dataset_id, erased_hashes)
        purge_dataset_predictions(session, store(), model.dataset_id, erasing)
        purge_embeddings(session, store(), model.dataset_id, erased_hashes)
        model.active_batch = None
        for request in (r for r in current if r is not None):
            add_phase(request, "erasure_s", round(time.perf_counter() - erasure_began, 4))
            finish(request)
        if released:
            log.info("%s request(s) of other models completed by this erasure", len(released))
        log.info(
            "model %s version %s: %s request(s) completed, %s old checkpoints purged",
            model.id,
            version.number,
            len(requests),
            purged,
        )


def erase_batch_files(version: ModelVersion, requests: list[DeletionRequest]) -> set[int]:
    """Check every file of the batch, then in one transaction make the new version current and
    record the intent to erase, then unlink them. Raises ErasureRefusedError (nothing erased,
    the parent still current) when any file fails its check.

    From that commit on the model serves a version proven free of the data, and a worker that
    dies mid-unlink leaves samples marked erasing that the resumed completion finishes."""
    with session_scope() as session:
        model = session.get(Model, version.model_id)
        assert model is not None
        dataset = model.dataset
        model.current_version_id = version.id
        session.flush()
        pending = pending_samples(session, [r.id for r in requests])
        # A file another model of the dataset still trains on stays until that model has
        # forgotten it too (its linked request); this batch's requests then wait for it.
        held = shared.held_samples(
            session, dataset.id, [s.id for s in pending if s.state == SampleState.ACTIVE]
        )
        samples = [s for s in pending if s.id not in held]
        checked = check_files(dataset, samples, get_settings().data_roots)
        for sample in samples:
            sample.state = SampleState.ERASING
        session.expunge(dataset)
    unlink_files(dataset, checked)
    return {s.sample_id for s in checked}


def resume_completion(version_id: int, audit: AuditHook | None) -> int | None:
    """Finish the batch of a version that is ready but whose requests were left unfinished.

    Returns the model id when there was such a version, None otherwise.
    """
    with session_scope() as session:
        version = session.get(ModelVersion, version_id)
        if version is None or version.status != VersionStatus.READY:
            return None
        session.expunge(version)
    complete_batch(version, audit)
    return version.model_id


def fail_batch(version_id: int, reason: str) -> int | None:
    """Mark a failed version's requests failed and free the model; returns the model id.

    A version that was not made current (its training, proof, audit or file checks failed)
    is marked failed too; one already current (its erasure had begun) stays."""
    with session_scope() as session:
        version = session.get(ModelVersion, version_id)
        if version is None:
            return None
        model = session.get(Model, version.model_id)
        if model is not None and model.current_version_id != version.id:
            version.status = VersionStatus.FAILED
            version.status_reason = version.status_reason or reason
            purge_version(session, store(), version)  # never served: see refuse_batch
        for request in session.scalars(
            select(DeletionRequest).where(DeletionRequest.result_version_id == version_id)
        ).all():
            if request.status in (RequestStatus.RUNNING, RequestStatus.VERIFYING):
                request.status = RequestStatus.FAILED
                request.status_reason = reason
                events.record(session, request, "failed", reason=reason)
        session.execute(update(Model).where(Model.id == version.model_id).values(active_batch=None))
        return version.model_id
