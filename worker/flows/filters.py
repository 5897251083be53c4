"""The weight-filter job of a model: train per-class filters for every constituent of the
current version (frozen), measure each class's filter on the validation split, mark it ready.

The job does not lock the model: deletions go on meanwhile. A job that finds, when done, that
another version became current purges what it wrote (its filters match weights no longer
served, and may have been trained on data since erased). Each constituent's filters are
stored as soon as they are trained, so a job taken over after its worker died (the sweep
queues it again) resumes with the constituents left.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select, update

from app.core.methods.weight_filtering import FilterTrainingConfig
from app.db.filters import FilterStatus, WeightFilterJob
from app.db.models import Model, ModelVersion
from app.db.session import session_scope
from app.repositories.samples import active_validation_ids
from app.settings import get_settings
from worker.constituents import CHECKPOINTS, derived_seed, final_checkpoints, fresh_constituent
from worker.flows.approximate import shard_sample_ids
from worker.flows.common import device, is_stale, log, now, store
from worker.flows.filter_store import load_filters, purge_job, save_filters
from worker.flows.shards import load_model
from worker.samples import load_tensors, sample_rows
from worker.training.evaluate import aggregate, predict_proba
from worker.training.trainer import load_checkpoint
from worker.unlearning.filtering import apply_filters, train_filters

PROGRESS_EVERY_S = 2.0
# Training takes this share of the progress bar, the accuracy table the rest.
TRAIN_SHARE = 0.9
# Salt of the filter training seed, apart from training and unlearning seeds.
_SEED_DOMAIN = 0xF117


class LostJobError(RuntimeError):
    """Another run took the job over (this one was presumed dead): stop quietly."""


@dataclass(frozen=True)
class JobContext:
    job_id: int
    token: str
    model: Model
    version: ModelVersion
    config: FilterTrainingConfig
    checkpoints: dict[int, str]
    """shard -> final checkpoint key of the version the filters are trained on."""
    done: frozenset[int]


def claim_job(job_id: int) -> JobContext | None:
    """Take a queued job (conditional UPDATE); None when it is not queued any more."""
    token = str(uuid.uuid4())
    with session_scope() as session:
        taken = session.execute(
            update(WeightFilterJob)
            .where(WeightFilterJob.id == job_id, WeightFilterJob.status == FilterStatus.QUEUED)
            .values(
                status=FilterStatus.TRAINING,
                worker_token=token,
                heartbeat_at=now(),
                attempts=WeightFilterJob.attempts + 1,
            )
        )
        if not taken.rowcount:  # type: ignore[attr-defined]
            return None
        job = session.get(WeightFilterJob, job_id)
        assert job is not None
        job.started_at = job.started_at or now()
        model = load_model(session, job.model_id)
        version = session.get(ModelVersion, job.version_id)
        assert version is not None
        checkpoints = {
            c.shard: c.key for c in final_checkpoints(session, version, model.recipe.slices)
        }
        context = JobContext(
            job_id=job_id,
            token=token,
            model=model,
            version=version,
            config=FilterTrainingConfig.model_validate(job.config),
            checkpoints=checkpoints,
            done=frozenset(int(s) for s in job.shards),
        )
        session.expunge(version)
        session.expunge(model)
    return context


class JobProgress:
    """Throttled progress and heartbeat writes; raises LostJobError once the job is not ours."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.last = 0.0

    def __call__(self, fraction: float, phase: str, force: bool = False) -> None:
        moment = time.monotonic()
        if not force and moment - self.last < PROGRESS_EVERY_S:
            return
        self.last = moment
        with session_scope() as session:
            written = session.execute(
                update(WeightFilterJob)
                .where(
                    WeightFilterJob.id == self.context.job_id,
                    WeightFilterJob.worker_token == self.context.token,
                    WeightFilterJob.status == FilterStatus.TRAINING,
                )
                .values(
                    progress=round(min(1.0, max(0.0, fraction)), 4), phase=phase, heartbeat_at=now()
                )
            )
            if not written.rowcount:  # type: ignore[attr-defined]
                raise LostJobError(f"weight filter job {self.context.job_id} was taken over")


def _constituent(context: JobContext, shard: int) -> torch.nn.Module:
    net = fresh_constituent(context.model, shard)
    blob = store().get(CHECKPOINTS, context.checkpoints[shard])
    load_checkpoint(blob, net, None, map_location="cpu")
    return net.to(device()).eval()


def _train_shard(context: JobContext, shard: int, progress: JobProgress, index: int) -> None:
    with session_scope() as session:
        rows = sample_rows(session, shard_sample_ids(session, context.version.id, shard))
    images, labels = load_tensors(
        get_settings(), context.model.dataset, rows, context.model.recipe.image_size
    )
    net = _constituent(context, shard)
    total = len(context.checkpoints)
    began = time.perf_counter()
    filters = train_filters(
        net,
        images,
        labels,
        len(context.model.dataset.classes),
        context.config,
        device(),
        derived_seed(context.model.recipe.seed, shard, _SEED_DOMAIN),
        lambda f, phase: progress(TRAIN_SHARE * (index + f) / total, f"shard {shard}"),
    )
    seconds = time.perf_counter() - began
    save_filters(context.job_id, context.checkpoints[shard], filters)
    with session_scope() as session:
        job = session.get(WeightFilterJob, context.job_id)
        assert job is not None
        if job.worker_token != context.token:
            raise LostJobError(f"weight filter job {context.job_id} was taken over")
        job.shards = {
            **job.shards,
            str(shard): {"seconds": round(seconds, 3), "samples": int(images.shape[0])},
        }
        job.train_seconds = float(job.train_seconds or 0.0) + seconds
    log.info("weight filters %s: shard %s trained in %.1fs", context.job_id, shard, seconds)


def accuracy_table(context: JobContext, classes: list[str]) -> dict[str, Any]:
    """Per class still held: the accuracy of the model filtered for that class on its own
    validation images (forget) and on the other held classes' (retained)."""
    with session_scope() as session:
        ids = active_validation_ids(session, context.model.dataset_id)
        rows = sample_rows(session, ids)
    images, labels = load_tensors(
        get_settings(), context.model.dataset, rows, context.model.recipe.image_size
    )
    names = context.model.dataset.classes
    held = torch.tensor([names.index(c) for c in classes], dtype=labels.dtype)
    in_scope = torch.isin(labels, held)
    shards = sorted(context.checkpoints)
    nets = {s: _constituent(context, s) for s in shards}
    filters = {s: load_filters(context.job_id, context.checkpoints[s]) for s in shards}
    how = context.model.recipe.aggregation

    def accuracy(pred: torch.Tensor, mask: torch.Tensor) -> float | None:
        return float((pred[mask] == labels[mask]).float().mean()) if bool(mask.any()) else None

    base = aggregate([predict_proba(n, images, device=device()) for n in nets.values()], how)
    table: dict[str, Any] = {}
    for name in classes:
        c = names.index(name)
        probas = []
        for s in shards:
            net = copy.deepcopy(nets[s])
            apply_filters(net, filters[s], [c])
            probas.append(predict_proba(net, images, device=device()))
        pred = aggregate(probas, how).argmax(1)
        forget, retain = labels == c, in_scope & (labels != c)
        table[name] = {
            "forget_accuracy": accuracy(pred, forget),
            "retained_accuracy": accuracy(pred, retain),
            "forget_accuracy_unfiltered": accuracy(base.argmax(1), forget),
            "retained_accuracy_unfiltered": accuracy(base.argmax(1), retain),
            "n_forget": int(forget.sum()),
            "n_retained": int(retain.sum()),
        }
    return {"split": "validation", "classes": table}


def run_job(job_id: int) -> bool:
    """Train, measure and publish one job; False when there was nothing to run."""
    context = claim_job(job_id)
    if context is None:
        return False
    progress = JobProgress(context)
    progress(TRAIN_SHARE * len(context.done) / len(context.checkpoints), "starting", force=True)
    for index, shard in enumerate(sorted(context.checkpoints)):
        if shard not in context.done:
            _train_shard(context, shard, progress, index)
    progress(TRAIN_SHARE, "accuracy table", force=True)
    with session_scope() as session:
        job = session.get(WeightFilterJob, job_id)
        assert job is not None
        classes = list(job.classes)
    table = accuracy_table(context, classes)
    _finish(context, table)
    return True


def _finish(context: JobContext, table: dict[str, Any]) -> None:
    with session_scope() as session:
        job = session.get(WeightFilterJob, context.job_id)
        model = session.get(Model, context.model.id)
        assert job is not None and model is not None
        if job.worker_token != context.token or job.status != FilterStatus.TRAINING:
            raise LostJobError(f"weight filter job {context.job_id} was taken over")
        job.accuracy = table
        job.finished_at = now()
        if model.current_version_id != job.version_id:
            purge_job(session, job, "another version became current while the filters trained")
            return
        job.status, job.progress, job.phase = FilterStatus.READY, 1.0, "done"
        older = session.scalars(
            select(WeightFilterJob).where(
                WeightFilterJob.model_id == job.model_id,
                WeightFilterJob.id != job.id,
                WeightFilterJob.status == FilterStatus.READY,
            )
        ).all()
        for previous in older:
            purge_job(session, previous, f"superseded by weight filters {job.id}")
    log.info("weight filters %s of model %s ready", context.job_id, context.model.id)


def fail_job(job_id: int, reason: str) -> None:
    with session_scope() as session:
        job = session.get(WeightFilterJob, job_id)
        if job is None or job.status not in (FilterStatus.QUEUED, FilterStatus.TRAINING):
            return
        purge_job(session, job, reason)
        job.status = FilterStatus.FAILED


# How many runs may take a job before the sweep gives up on it.
MAX_ATTEMPTS = 3


def stalled_jobs(stale_after: float) -> list[int]:
    """Jobs whose task vanished: queued again (their trained constituents are kept), or failed
    after MAX_ATTEMPTS runs. Returns the ids to send again."""
    resend: list[int] = []
    with session_scope() as session:
        jobs = session.scalars(
            select(WeightFilterJob).where(
                WeightFilterJob.status.in_((FilterStatus.QUEUED, FilterStatus.TRAINING))
            )
        ).all()
        for job in jobs:
            if not is_stale(job.heartbeat_at or job.created_at, stale_after):
                continue
            if job.status == FilterStatus.TRAINING and job.attempts >= MAX_ATTEMPTS:
                purge_job(session, job, f"its worker stopped {job.attempts} times")
                job.status = FilterStatus.FAILED
                continue
            job.status, job.worker_token, job.heartbeat_at = FilterStatus.QUEUED, None, now()
            resend.append(job.id)
    return resend
