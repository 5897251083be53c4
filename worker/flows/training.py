"""Training a version's constituents slice by slice, then evaluating the ensemble."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.recipe import ORIGINAL_NORM, TrainingRecipe
from app.db.models import (
    Checkpoint,
    ManifestEntry,
    Model,
    ModelStatus,
    ModelVersion,
    Sample,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.db.session import session_scope
from app.repositories.samples import active_test_ids
from app.settings import get_settings
from worker.audit.cost import shard_work
from worker.backbones.embeddings import cached_features
from worker.backbones.head_training import train_on_features
from worker.backbones.heads import HeadNet, head_proba
from worker.constituents import CHECKPOINTS, derived_seed, fresh_constituent, load_constituents
from worker.evaluation.finite import storable_metrics
from worker.evaluation.forgetting import forgetting_metrics
from worker.flows.common import device, log, now, store, touch_model
from worker.flows.guards import VersionRefusedError, non_finite_refusal
from worker.flows.shards import (
    ShardProgress,
    claim_shard,
    detach,
    mark_shard_done,
    update_checkpoint,
    update_shard,
)
from worker.flows.timings import add_batch_phase, retrain_seconds, stopwatch
from worker.predictions import PREDICTIONS, split_predictions
from worker.samples import SampleRow, load_tensors, sample_rows
from worker.training.evaluate import accuracy_summary, aggregate, predict_proba
from worker.training.trainer import (
    Recipe,
    checkpoint_bytes,
    load_checkpoint,
    make_optimizer,
    train_epochs,
)


def engine_recipe(training: TrainingRecipe) -> Recipe:
    """The training engine's recipe; fields absent from a stored recipe keep their historical
    defaults (constant lr, no augmentation, no smoothing)."""
    return Recipe(
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        batch_size=training.batch_size,
        schedule=training.schedule,
        warmup=training.warmup,
        augment=training.augment,
        label_smoothing=training.label_smoothing,
    )


def training_record(model: Model) -> dict[str, Any]:
    """How each constituent of the model is trained, every value written out (the stored recipe
    may leave out fields that keep their historical meaning)."""
    recipe = model.recipe
    training = recipe.training
    return {
        "architecture": model.architecture,
        "epochs_per_slice": recipe.epochs_per_slice,
        "slices": recipe.slices,
        "image_size": recipe.image_size,
        **training.model_dump(mode="json"),
        "norm": training.norm or ORIGINAL_NORM.get(model.architecture, "original"),
        "schedule_restarts": "every slice" if training.schedule != "constant" else None,
        **_heads_record(model),
    }


def _heads_record(model: Model) -> dict[str, Any]:
    """For heads on a backbone: which backbone, and what each shard trains."""
    recipe = model.recipe
    if recipe.backbone is None:
        return {}
    spec = recipe.backbone
    return {
        "norm": "backbone (fixed)",
        "backbone": {"name": spec.name, "sha256": spec.sha256, "trained_on": spec.trained_on},
        "head": recipe.head,
        "tune": recipe.tune,
        "trained_on_cached_features": True,
    }


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


@dataclass(frozen=True)
class TrainingJob:
    """What a shard's training needs, read before the (long) run."""

    version_id: int
    shard: int
    model: Model
    keys: list[str]
    """Checkpoint key of each slice."""
    per_slice: list[list[SampleRow]]
    restart: int


def _claim_training(version_id: int, shard: int) -> TrainingJob | bool:
    with session_scope() as session:
        claim = claim_shard(session, version_id, shard, activity="trained")
        if isinstance(claim, bool):
            return claim
        model = claim.model
        slices = model.recipe.slices
        checkpoints = session.scalars(
            select(Checkpoint)
            .where(Checkpoint.version_id == version_id, Checkpoint.shard == shard)
            .order_by(Checkpoint.slice)
        ).all()
        job = TrainingJob(
            version_id=version_id,
            shard=shard,
            model=model,
            keys=[c.key for c in checkpoints],
            per_slice=_shard_samples(session, version_id, shard, slices),
            restart=claim.state.restart_slice,
        )
        detach(session, model)
    return job


def train_shard(version_id: int, shard: int) -> bool:
    """Train one constituent of a version from its restart slice. True when it is done."""
    job = _claim_training(version_id, shard)
    if isinstance(job, bool):
        return job
    blob_store = store()
    # Resume from the latest reusable checkpoint actually present in the store: if one was
    # lost, retrain from further back rather than trust a record.
    start = job.restart
    while start > 0 and not blob_store.exists(CHECKPOINTS, job.keys[start - 1]):
        start -= 1
    began = time.perf_counter()
    trained = _train_slices(job, start, began)
    slices = job.model.recipe.slices
    with session_scope() as session:
        if start < job.restart:
            session.execute(
                update(Checkpoint)
                .where(
                    Checkpoint.version_id == version_id,
                    Checkpoint.shard == shard,
                    Checkpoint.slice >= start,
                )
                .values(reused=False)
            )
        mark_shard_done(
            session,
            version_id,
            shard,
            restart_slice=start,
            train_seconds=time.perf_counter() - began,
            samples_trained=trained,
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


Fit = Callable[..., list[float]]


def _training_inputs(
    model: Model, rows: list[SampleRow], net: torch.nn.Module, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, Fit]:
    """What a shard trains on and how: images for a model trained from scratch, cached
    backbone features (computed once per image) for heads on a backbone."""
    settings = get_settings()
    if isinstance(net, HeadNet):
        feats, labels = cached_features(settings, store(), model, rows, net, dev)
        return feats, labels, partial(train_on_features, net.trainable)
    images, labels = load_tensors(settings, model.dataset, rows, model.recipe.image_size)
    return images, labels, partial(train_epochs, net)


def _train_slices(job: TrainingJob, start: int, began: float) -> int:
    """Train slices ``start..`` (slice r on slices 0..r), checkpointing after each; returns the
    sample passes made."""
    settings = get_settings()
    recipe = job.model.recipe
    blob_store = store()
    dev = device(settings)
    net = fresh_constituent(job.model, job.shard).to(dev)
    training = engine_recipe(recipe.training)
    optimizer = make_optimizer(net, training)
    if start > 0:
        load_checkpoint(blob_store.get(CHECKPOINTS, job.keys[start - 1]), net, optimizer, dev)
    flat = [row for rows in job.per_slice for row in rows]
    images, labels, fit = _training_inputs(job.model, flat, net, dev)
    bounds = [0]
    for rows in job.per_slice:
        bounds.append(bounds[-1] + len(rows))
    progress = ShardProgress(job.version_id, job.model.id, job.shard)
    trained = 0
    for slice_ in range(start, recipe.slices):
        end = bounds[slice_ + 1]  # cumulative: slice r trains on slices 0..r
        fit(
            optimizer,
            images[:end],
            labels[:end],
            epochs=recipe.epochs_per_slice,
            batch_size=training.batch_size,
            seed=derived_seed(recipe.seed, job.shard, slice_),
            device=dev,
            on_batch=progress.batches_of(slice_),
            recipe=training,  # its schedule restarts here: one cycle per slice
        )
        trained += end * recipe.epochs_per_slice
        artifact = blob_store.put(CHECKPOINTS, job.keys[slice_], checkpoint_bytes(net, optimizer))
        blob_store.delete(PREDICTIONS, job.keys[slice_])  # made from whatever was there before
        with session_scope() as session:
            update_checkpoint(
                session,
                job.version_id,
                job.shard,
                slice_,
                reused=False,
                artifact_sha256=artifact,
                created_at=now(),
            )
            update_shard(
                session,
                job.version_id,
                job.shard,
                current_slice=slice_ + 1,
                slice_fraction=0.0,
                samples_trained=trained,
                train_seconds=time.perf_counter() - began,
            )
            touch_model(session, job.model.id)
    return trained


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


def _test_probas(
    model: Model, rows: list[SampleRow], nets: list[torch.nn.Module], dev: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each constituent's test probabilities; heads read the test features from the cache."""
    settings = get_settings()
    if nets and isinstance(nets[0], HeadNet):
        feats, labels = cached_features(settings, store(), model, rows, nets[0], dev)
        return [head_proba(net, feats, dev) for net in nets if isinstance(net, HeadNet)], labels
    images, labels = load_tensors(settings, model.dataset, rows, model.recipe.image_size)
    return [predict_proba(net, images, device=dev) for net in nets], labels


def evaluate_version(session: Session, model: Model, version: ModelVersion) -> dict[str, Any]:
    """Test accuracy of the ensemble (overall, per class, on retained classes) and of each
    constituent, plus the cost of building the version. Constituents kept unchanged from an
    earlier version answer from their cached test predictions; only new ones are run."""
    settings = get_settings()
    dataset = model.dataset
    rows = sample_rows(session, active_test_ids(session, dataset.id))
    dev = device(settings)
    if model.recipe.backbone is not None:
        # Heads answer from the embedding cache in a fraction of a second: no need to cache
        # their predictions too.
        constituents = load_constituents(session, store(), model, version, dev)
        probas, labels = _test_probas(model, rows, constituents, dev)
        predictions = None
    else:
        labels = torch.tensor([r.class_index for r in rows], dtype=torch.int64)
        predictions = split_predictions(
            session,
            store(),
            model,
            version,
            rows,
            lambda: load_tensors(settings, dataset, rows, model.recipe.image_size)[0],
            dev,
        )
        probas = predictions.probas
    ensemble = aggregate(probas, model.recipe.aggregation)
    classes = dataset.classes
    retired = {classes.index(c) for c in version.retired_classes}
    keep = torch.tensor([int(y) not in retired for y in labels], dtype=torch.bool)
    work = shard_work(session, version.id, model.recipe.slices)
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
        "training": training_record(model),
        "evaluation": {
            "constituents_evaluated": predictions.evaluated
            if predictions
            else list(range(len(probas))),
            "constituents_from_cache": predictions.cached if predictions else [],
            "test_samples": len(rows),
        },
        "cost": {
            "train_seconds": work.train_seconds,
            "sample_passes": work.sample_passes,
            "retrained_shards": work.retrained_shards,
        },
    }


def finalize_version(version_id: int) -> ModelVersion | None:
    """Evaluate a fully trained version and make it current (a deletion's: ready, made current
    by its completion). Returns it when this call did so."""
    with session_scope() as session:
        if not claim_finalization(session, version_id):
            return None
        version = session.get(ModelVersion, version_id)
        assert version is not None
        model = session.get(Model, version.model_id)
        assert model is not None
        refusal = non_finite_refusal(session, model, version)
        if refusal is not None:  # never evaluated, never made current: the version fails
            raise VersionRefusedError(refusal)
        with stopwatch() as evaluation:
            metrics = evaluate_version(session, model, version)
            if version.reason == "deletion":
                forgetting = forgetting_metrics(session, model, version)
                if forgetting is not None:
                    metrics["forgetting"] = forgetting
        if version.reason == "deletion":
            retrained = retrain_seconds(session, version.id, model.recipe.slices)
            add_batch_phase(session, version.id, "retrain_s", retrained)
            add_batch_phase(session, version.id, "evaluation_s", evaluation["s"])
        version.metrics = storable_metrics(metrics)  # no NaN or infinity in JSON
        version.status = VersionStatus.READY
        version.completed_at = now()
        if version.reason != "deletion":
            # A deletion's version is made current only when its proof and guard rails hold,
            # in the transaction that records the erasure (worker.flows.deletion).
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
