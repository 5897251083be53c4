"""Approximate unlearning on each constituent of a version (UNSIR, adversarial, baselines), for
class and file targets alike.

`deletion.start_batch` lays out the new version with every parent checkpoint kept and each
constituent's final slot pending. Here one task per constituent loads the parent's final
weights, runs the request's method on them with the shard's own training data (forget = the
request's targets the shard trained on, retain = the rest of the shard), and stores the result
under a new content key. The other slots keep pointing at the parent's checkpoints: they record
what the constituent was trained on, which an approximate method does not change.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.store_namespaces import METHOD_RESULTS
from app.db.models import (
    Checkpoint,
    Dataset,
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    Sample,
)
from app.db.session import session_scope
from app.settings import get_settings
from worker.constituents import CHECKPOINTS, derived_seed, fresh_constituent
from worker.flows.common import device, log, now, store, touch_model
from worker.flows.filter_store import load_filters, ready_job_for, save_filters
from worker.flows.shards import (
    ShardProgress,
    claim_shard,
    detach,
    mark_shard_done,
    update_checkpoint,
)
from worker.samples import load_tensors, sample_rows
from worker.training.trainer import checkpoint_bytes, load_checkpoint
from worker.unlearning.base import Runner, UnlearningInputs
from worker.unlearning.registry import Method, get_method

# Salt of the unlearning seed, so it never coincides with a training seed (seed, shard, slice).
_SEED_DOMAIN = 0x5EED


@dataclass(frozen=True)
class ShardJob:
    """Everything read from the database before the (long) method run."""

    version_id: int
    shard: int
    model: Model
    dataset: Dataset
    spec: Method
    method_config: BaseModel
    """The request's configuration, typed by the method's config model."""
    parent_key: str
    parent_artifact: str | None
    new_key: str
    shard_ids: list[int]
    target_ids: frozenset[int]
    forget_classes: list[int]


def unlearned_key(parent_key: str, method: str, config: dict[str, Any], salt: str) -> str:
    """Content key of an unlearned constituent: the weights it started from, the method and its
    exact configuration, and the batch's salt (a re-run of the same batch lands on the same key,
    a later request never collides with it)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{parent_key}:{method}:{canonical}:{salt}".encode()).hexdigest()


def _batch_requests(session: Session, version_id: int) -> list[DeletionRequest]:
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.result_version_id == version_id)
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
        ).all()
    )


def shard_sample_ids(session: Session, version_id: int, shard: int) -> list[int]:
    """The shard's training samples in the canonical training order (slice, content hash), so
    the decoded-image cache written when the shard was trained is hit again."""
    return list(
        session.scalars(
            select(ManifestEntry.sample_id)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(ManifestEntry.version_id == version_id, ManifestEntry.shard == shard)
            .order_by(ManifestEntry.slice, Sample.sha256)
        ).all()
    )


def _final_checkpoint(session: Session, version_id: int, shard: int, slices: int) -> Checkpoint:
    checkpoint = session.scalar(
        select(Checkpoint).where(
            Checkpoint.version_id == version_id,
            Checkpoint.shard == shard,
            Checkpoint.slice == slices - 1,
        )
    )
    if checkpoint is None:
        raise RuntimeError(f"version {version_id} has no final checkpoint for shard {shard}")
    return checkpoint


def _claim(session: Session, version_id: int, shard: int) -> ShardJob | bool:
    """Take the shard over and read what its run needs; True/False when there is nothing to
    run (done already / owned by a live task or the version failed)."""
    claim = claim_shard(session, version_id, shard, activity="unlearned")
    if isinstance(claim, bool):
        return claim
    version, model = claim.version, claim.model
    if version.parent_id is None:
        raise RuntimeError(f"version {version_id} has no parent to unlearn from")
    spec = get_method(version.method)
    if spec.runner != Runner.MODEL:
        raise RuntimeError(f"method {spec.name!r} is not run on constituents in memory")
    requests = _batch_requests(session, version_id)
    if not requests:
        raise RuntimeError(f"version {version_id} has no deletion request")
    # Coalescing never mixes methods or configurations, so the first request's configuration
    # (validated and normalised when the request was accepted) is the batch's.
    config = spec.config_model.model_validate(requests[0].method_config)
    parent_final = _final_checkpoint(session, version.parent_id, shard, model.recipe.slices)
    shard_ids = shard_sample_ids(session, version.parent_id, shard)
    targets = set(
        session.scalars(
            select(DeletionTarget.sample_id).where(
                DeletionTarget.request_id.in_([r.id for r in requests])
            )
        ).all()
    )
    classes = model.dataset.classes
    job = ShardJob(
        version_id=version_id,
        shard=shard,
        model=model,
        dataset=model.dataset,
        spec=spec,
        method_config=config,
        parent_key=parent_final.key,
        parent_artifact=parent_final.artifact_sha256,
        new_key=unlearned_key(
            parent_final.key, spec.name, config.model_dump(mode="json"), version.checkpoint_salt
        ),
        shard_ids=shard_ids,
        target_ids=frozenset(targets.intersection(shard_ids)),
        forget_classes=sorted({classes.index(c) for r in requests for c in r.target_classes}),
    )
    detach(session, model)
    return job


def unlearn_shard(version_id: int, shard: int) -> bool:
    """Run the version's method on one constituent; True when the constituent is done."""
    with session_scope() as session:
        job = _claim(session, version_id, shard)
    if isinstance(job, bool):
        return job
    if not job.target_ids:
        # This constituent never trained on anything the request names: it already is the
        # model without that data, so it is kept as it is (exact for this shard).
        _keep_parent_constituent(job)
        return True
    began = time.perf_counter()
    outcome = _run_method(job)
    _record(job, outcome, time.perf_counter() - began)
    log.info(
        "version %s shard %s unlearned with %s in %.1fs (%s forget, %s retain samples given)",
        version_id,
        shard,
        job.spec.name,
        outcome.method_seconds,
        outcome.given.forget,
        outcome.given.retain,
    )
    return True


@dataclass(frozen=True)
class Given:
    """How many training samples the method was handed (its "samples touched")."""

    forget: int
    retain: int


def _load_inputs(
    job: ShardJob, net: torch.nn.Module, dev: torch.device
) -> tuple[UnlearningInputs, Given]:
    settings = get_settings()
    with session_scope() as session:
        rows = sample_rows(session, job.shard_ids)
    images, labels = load_tensors(settings, job.dataset, rows, job.model.recipe.image_size)
    is_target = torch.tensor([r.sample_id in job.target_ids for r in rows], dtype=torch.bool)
    forget_images, forget_labels = images[is_target], labels[is_target]
    if not job.spec.reads_forget_images:
        # Zero-glance methods get nothing of the forgotten data, by construction.
        forget_images, forget_labels = forget_images[:0], forget_labels[:0]
    retain_images, retain_labels = images[~is_target], labels[~is_target]
    inputs = UnlearningInputs(
        model=net,
        forget_images=forget_images,
        forget_labels=forget_labels,
        retain_images=retain_images,
        retain_labels=retain_labels,
        num_classes=len(job.dataset.classes),
        forget_classes=list(job.forget_classes),
        device=dev,
        seed=derived_seed(job.model.recipe.seed, job.shard, _SEED_DOMAIN),
        progress=_method_progress(job),
    )
    return inputs, Given(forget=int(forget_images.shape[0]), retain=int(retain_images.shape[0]))


def _method_progress(job: ShardJob) -> Callable[[float, str], None]:
    """Progress of the method, shown on the shard's final slice."""
    writer = ShardProgress(job.version_id, job.model.id, job.shard)
    final_slice = job.model.recipe.slices - 1
    return lambda fraction, phase: writer(final_slice, fraction)


@dataclass(frozen=True)
class Outcome:
    details: dict[str, Any]
    given: Given
    method_seconds: float
    """The method's run alone, like train_shard's train_seconds (loading excluded), so the two
    compare."""


def _run_method(job: ShardJob) -> Outcome:
    """Unlearn the parent's constituent and store it under the new key (idempotent: the key is
    the same for a re-run, and a present blob is by construction the right one)."""
    blob_store = store()
    dev = device()
    net = fresh_constituent(job.model, job.shard)
    load_checkpoint(blob_store.get(CHECKPOINTS, job.parent_key), net, None, map_location="cpu")
    net = net.to(dev)
    inputs, given = _load_inputs(job, net, dev)
    filter_job = _attach_filters(job, inputs)
    assert job.spec.run is not None
    began = time.perf_counter()
    result = job.spec.run(inputs, job.method_config)
    seconds = time.perf_counter() - began
    net.eval()
    if filter_job is not None and inputs.filters is not None:
        # The rows left compose with what was just applied, for later requests.
        save_filters(filter_job, job.new_key, inputs.filters.without(job.forget_classes))
    # No optimizer state: an unlearned final slot is never a point that training resumes from.
    blob_store.put(CHECKPOINTS, job.new_key, checkpoint_bytes(net.cpu(), None))
    return Outcome(details=result.details, given=given, method_seconds=seconds)


def _attach_filters(job: ShardJob, inputs: UnlearningInputs) -> int | None:
    """Hand a filter-applying method the constituent's trained filters; returns the job id."""
    if not job.spec.uses_weight_filters:
        return None
    with session_scope() as session:
        parent_id = session.scalar(
            select(ModelVersion.parent_id).where(ModelVersion.id == job.version_id)
        )
        filter_job = ready_job_for(session, job.model.id, parent_id) if parent_id else None
        if filter_job is None:
            raise RuntimeError(
                "the model has no ready weight filters for the version this request started "
                "from (another version became current, or they were purged); train them again "
                "with POST /v1/models/{id}/filters"
            )
        wanted = {job.dataset.classes[c] for c in job.forget_classes}
        missing = sorted(wanted - set(filter_job.classes))
        if missing:
            raise RuntimeError(f"the model's weight filters hold no rows for classes {missing}")
        job_id = filter_job.id
    inputs.filters = load_filters(job_id, job.parent_key)
    return job_id


def _record(job: ShardJob, outcome: Outcome, total_seconds: float) -> None:
    artifact = hashlib.sha256(store().get(CHECKPOINTS, job.new_key)).hexdigest()
    summary = {
        "method": job.spec.name,
        "config": job.method_config.model_dump(mode="json"),
        "shard": job.shard,
        "method_seconds": outcome.method_seconds,
        "total_seconds": total_seconds,
        "forget_samples": len(job.target_ids),
        "forget_samples_given": outcome.given.forget,
        "retain_samples_given": outcome.given.retain,
        "details": outcome.details,
    }
    store().put(
        METHOD_RESULTS, job.new_key, json.dumps(summary, sort_keys=True, default=str).encode()
    )
    final_slice = job.model.recipe.slices - 1
    with session_scope() as session:
        update_checkpoint(
            session,
            job.version_id,
            job.shard,
            final_slice,
            key=job.new_key,
            artifact_sha256=artifact,
            reused=False,
            created_at=now(),
        )
        mark_shard_done(
            session,
            job.version_id,
            job.shard,
            current_slice=final_slice + 1,
            slice_fraction=0.0,
            train_seconds=outcome.method_seconds,
            samples_trained=outcome.given.forget + outcome.given.retain,
        )
        touch_model(session, job.model.id)


def _keep_parent_constituent(job: ShardJob) -> None:
    slices = job.model.recipe.slices
    with session_scope() as session:
        update_checkpoint(
            session,
            job.version_id,
            job.shard,
            slices - 1,
            key=job.parent_key,
            artifact_sha256=job.parent_artifact,
            reused=True,
        )
        mark_shard_done(session, job.version_id, job.shard, restart_slice=slices)
    log.info(
        "version %s shard %s holds none of the forgotten samples: constituent kept",
        job.version_id,
        job.shard,
    )
