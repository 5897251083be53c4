"""Training a version's constituents slice by slice, then evaluating the ensemble."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    Dataset,
    ManifestEntry,
    Model,
    ModelStatus,
    ModelVersion,
    Sample,
    SampleState,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.db.session import session_scope
from app.settings import get_settings
from worker.audit.cost import shard_work
from worker.constituents import CHECKPOINTS, derived_seed, fresh_constituent, load_constituents
from worker.flows.common import device, is_stale, log, now, store, touch_model
from worker.samples import SampleRow, load_tensors, sample_rows
from worker.training.evaluate import accuracy_summary, aggregate, predict_proba
from worker.training.trainer import (
    Recipe,
    checkpoint_bytes,
    load_checkpoint,
    make_optimizer,
    train_epochs,
)

PROGRESS_EVERY_S = 2.0


def shards_to_train(session: Session, version_id: int) -> list[int]:
    return list(
        session.scalars(
            select(VersionShard.shard).where(
                VersionShard.version_id == version_id,
                VersionShard.status != ShardStatus.DONE,
            )
        ).all()
    )


def _shard_samples(
    session: Session, version_id: int, shard: int, slices: int
) -> list[list[SampleRow]]:
    """The shard's samples per slice, each slice in content-hash order (the canonical order)."""
    rows = session.execute(
        select(ManifestEntry.sample_id, ManifestEntry.slice)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == version_id, ManifestEntry.shard == shard)
        .order_by(ManifestEntry.slice, Sample.sha256)
    ).all()
    ordered = sample_rows(session, [sid for sid, _ in rows])
    per_slice: list[list[SampleRow]] = [[] for _ in range(slices)]
    for row, (_, slice_) in zip(ordered, rows, strict=True):
        per_slice[slice_].append(row)
    return per_slice


class _ProgressWriter:
    """Throttled progress writes, so a fast loop is not slowed down by the database."""

    def __init__(self, version_id: int, model_id: int, shard: int) -> None:
        self.key = (version_id, shard)
        self.model_id = model_id
        self.last = 0.0

    def for_slice(self, slice_: int) -> Callable[[int, int], None]:
        return lambda done, total: self(slice_, done, total)

    def __call__(self, slice_: int, done: int, total: int) -> None:
        moment = time.monotonic()
        if moment - self.last < PROGRESS_EVERY_S and done < total:
            return
        self.last = moment
        with session_scope() as session:
            session.execute(
                update(VersionShard)
                .where(VersionShard.version_id == self.key[0], VersionShard.shard == self.key[1])
                .values(current_slice=slice_, slice_fraction=done / max(total, 1), updated_at=now())
            )
            touch_model(session, self.model_id)


def train_shard(version_id: int, shard: int) -> bool:
    """Train one constituent of a version from its restart slice. True when it is done."""
    settings = get_settings()
    with session_scope() as session:
        state = session.get(VersionShard, (version_id, shard))
        version = session.get(ModelVersion, version_id)
        if state is None or version is None or version.status == VersionStatus.FAILED:
            return False
        if state.status == ShardStatus.DONE:
            return True
        if state.status == ShardStatus.RUNNING and not is_stale(
            state.updated_at, settings.stale_task_after_s
        ):
            log.info("version %s shard %s is being trained elsewhere", version_id, shard)
            return False
        model = session.get(Model, version.model_id)
        assert model is not None
        dataset = session.get(Dataset, model.dataset_id)
        assert dataset is not None
        model.dataset = dataset
        slices = model.config["slices"]
        checkpoints = list(
            session.scalars(
                select(Checkpoint)
                .where(Checkpoint.version_id == version_id, Checkpoint.shard == shard)
                .order_by(Checkpoint.slice)
            ).all()
        )
        per_slice = _shard_samples(session, version_id, shard, slices)
        state.status = ShardStatus.RUNNING
        state.updated_at = now()
        restart = state.restart_slice
        config = dict(model.config)
        session.expunge(model)
        session.expunge(dataset)
    keys = [c.key for c in checkpoints]
    blob_store = store()
    # Resume from the latest reusable checkpoint actually present in the store: if one was
    # lost, retrain from further back rather than trust a record.
    start = restart
    while start > 0 and not blob_store.exists(CHECKPOINTS, keys[start - 1]):
        start -= 1
    recipe = Recipe(**config["recipe"])
    dev = device(settings)
    net = fresh_constituent(model, shard).to(dev)
    optimizer = make_optimizer(net, recipe)
    if start > 0:
        load_checkpoint(blob_store.get(CHECKPOINTS, keys[start - 1]), net, optimizer, dev)
    flat = [row for rows in per_slice for row in rows]
    images, labels = load_tensors(settings, dataset, flat, config["image_size"])
    bounds = [0]
    for rows in per_slice:
        bounds.append(bounds[-1] + len(rows))
    progress = _ProgressWriter(version_id, model.id, shard)
    trained = 0
    began = time.perf_counter()
    for slice_ in range(start, slices):
        end = bounds[slice_ + 1]  # cumulative: slice r trains on slices 0..r
        train_epochs(
            net,
            optimizer,
            images[:end],
            labels[:end],
            epochs=config["epochs_per_slice"],
            batch_size=recipe.batch_size,
            seed=derived_seed(config["seed"], shard, slice_),
            device=dev,
            on_batch=progress.for_slice(slice_),
        )
        trained += end * config["epochs_per_slice"]
        artifact = blob_store.put(CHECKPOINTS, keys[slice_], checkpoint_bytes(net, optimizer))
        with session_scope() as session:
            session.execute(
                update(Checkpoint)
                .where(
                    Checkpoint.version_id == version_id,
                    Checkpoint.shard == shard,
                    Checkpoint.slice == slice_,
                )
                .values(reused=False, artifact_sha256=artifact, created_at=now())
            )
            session.execute(
                update(VersionShard)
                .where(VersionShard.version_id == version_id, VersionShard.shard == shard)
                .values(
                    current_slice=slice_ + 1,
                    slice_fraction=0.0,
                    samples_trained=trained,
                    train_seconds=time.perf_counter() - began,
                    updated_at=now(),
                )
            )
            touch_model(session, model.id)
    with session_scope() as session:
        if start < restart:
            session.execute(
                update(Checkpoint)
                .where(
                    Checkpoint.version_id == version_id,
                    Checkpoint.shard == shard,
                    Checkpoint.slice >= start,
                )
                .values(reused=False)
            )
        session.execute(
            update(VersionShard)
            .where(VersionShard.version_id == version_id, VersionShard.shard == shard)
            .values(
                status=ShardStatus.DONE,
                restart_slice=start,
                train_seconds=time.perf_counter() - began,
                samples_trained=trained,
                updated_at=now(),
            )
        )
    log.info(
        "version %s shard %s trained slices %s..%s (%s sample passes)",
        version_id,
        shard,
        start,
        slices - 1,
        trained,
    )
    return True


def claim_finalization(session: Session, version_id: int) -> bool:
    """Move a fully trained version to `evaluating`; only one caller wins."""
    if shards_to_train(session, version_id):
        return False
    result = session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == version_id, ModelVersion.status == VersionStatus.TRAINING)
        .values(status=VersionStatus.EVALUATING)
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def evaluate_version(session: Session, model: Model, version: ModelVersion) -> dict[str, Any]:
    """Test accuracy of the ensemble (overall, per class, on retained classes) and of each
    constituent, plus the cost of building the version."""
    settings = get_settings()
    dataset = model.dataset
    test_ids = session.scalars(
        select(Sample.id)
        .where(
            Sample.dataset_id == dataset.id,
            Sample.split == "test",
            Sample.state == SampleState.ACTIVE,
        )
        .order_by(Sample.sha256)
    ).all()
    rows = sample_rows(session, test_ids)
    images, labels = load_tensors(settings, dataset, rows, model.config["image_size"])
    dev = device(settings)
    constituents = load_constituents(session, store(), model, version, dev)
    probas = [predict_proba(net, images, device=dev) for net in constituents]
    ensemble = aggregate(probas, model.config["aggregation"])
    classes = dataset.classes
    retired = {classes.index(c) for c in version.retired_classes}
    keep = torch.tensor([int(y) not in retired for y in labels], dtype=torch.bool)
    work = shard_work(session, version.id, model.config["slices"])
    return {
        "test": accuracy_summary(ensemble.argmax(1), labels, classes),
        "test_retained_classes": accuracy_summary(ensemble[keep].argmax(1), labels[keep], classes)
        if retired
        else None,
        "constituents": [
            {
                "shard": i,
                "test_accuracy": accuracy_summary(p.argmax(1), labels, classes)["accuracy"],
            }
            for i, p in enumerate(probas)
        ],
        "cost": {
            "train_seconds": work.train_seconds,
            "sample_passes": work.sample_passes,
            "retrained_shards": work.retrained_shards,
        },
    }


def finalize_version(version_id: int) -> ModelVersion | None:
    """Evaluate a fully trained version and make it current. Returns it when this call did so."""
    with session_scope() as session:
        if not claim_finalization(session, version_id):
            return None
        version = session.get(ModelVersion, version_id)
        assert version is not None
        model = session.get(Model, version.model_id)
        assert model is not None
        metrics = evaluate_version(session, model, version)
        if version.reason == "deletion":
            from worker.flows.forgetting_metrics import forgetting_metrics

            forgetting = forgetting_metrics(session, model, version)
            if forgetting is not None:
                metrics["forgetting"] = forgetting
        version.metrics = metrics
        version.status = VersionStatus.READY
        version.completed_at = now()
        model.current_version_id = version.id
        model.status = ModelStatus.READY
        model.status_reason = None
        log.info("model %s version %s ready", model.id, version.number)
        return version


def fail_version(version_id: int, reason: str) -> None:
    with session_scope() as session:
        version = session.get(ModelVersion, version_id)
        if version is None:
            return
        version.status = VersionStatus.FAILED
        version.status_reason = reason
        model = session.get(Model, version.model_id)
        if model is not None and version.reason == "initial":
            model.status = ModelStatus.FAILED
            model.status_reason = reason
