"""Per-request forgetting metrics stored with a new version (issue: class forgetting).

Called by `training.finalize_version` for every deletion version, after the new version's own
test evaluation and before the batch is completed (so the forgotten images are still on disk
and the parent's checkpoints still in the store). Field names follow the audit report's
efficacy section (`app.audit.schema.EfficacySection`) so the report can take them over as they
are: accuracies are ``{"before", "after", "n"}``, "before" being the parent version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.store_namespaces import METHOD_RESULTS
from app.db.models import (
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    Sample,
    SampleState,
    as_utc,
)
from app.repositories.samples import active_test_ids
from app.settings import get_settings
from worker.audit.cost import shard_work
from worker.constituents import CHECKPOINTS, derived_seed, final_checkpoints, fresh_constituent
from worker.flows.common import device, log, now, store
from worker.predictions import split_predictions
from worker.samples import load_tensors, sample_rows
from worker.training.evaluate import aggregate, predict_proba
from worker.training.trainer import load_checkpoint
from worker.unlearning.metrics import layer_distances, prediction_distribution, relearn_epochs
from worker.unlearning.registry import get_method

# Relearn time is measured only where it is cheap: a monolithic model, on at most this many
# forgotten training images, for at most this many epochs (SGD, constant learning rate).
RELEARN_MAX_SAMPLES = 512
RELEARN_MAX_EPOCHS = 10
RELEARN_LR = 0.001
RELEARN_TARGET_FRACTION = 0.9
_RELEARN_SEED_DOMAIN = 0xBACC


@dataclass
class Evaluation:
    """Ensemble predictions of both versions on one set of images."""

    labels: torch.Tensor
    before: torch.Tensor | None
    after: torch.Tensor
    images: torch.Tensor | None = None
    """Kept only where a later step (relearn time) needs the images again."""

    def accuracy(self, mask: torch.Tensor | None = None) -> dict[str, Any]:
        keep = torch.ones_like(self.labels, dtype=torch.bool) if mask is None else mask
        n = int(keep.sum())
        return {
            "before": _acc(self.before[keep], self.labels[keep])
            if self.before is not None
            else None,
            "after": _acc(self.after[keep], self.labels[keep]),
            "n": n,
        }


def _acc(pred: torch.Tensor, labels: torch.Tensor) -> float | None:
    return float((pred == labels).float().mean()) if labels.numel() else None


def forgetting_metrics(
    session: Session, model: Model, version: ModelVersion
) -> dict[str, Any] | None:
    """Metrics comparing `version` with its parent on the forgotten data; None when not applicable."""
    requests = list(
        session.scalars(
            select(DeletionRequest).where(DeletionRequest.result_version_id == version.id)
        ).all()
    )
    parent = session.get(ModelVersion, version.parent_id) if version.parent_id else None
    if not requests or parent is None:
        return None
    after, before = _load_both(session, model, version, parent)
    forget_train = _forget_train(session, model, parent, [r.id for r in requests], before, after)
    metrics: dict[str, Any] = {
        "target": requests[0].target_kind,
        "method": version.method,
        "exact": _is_exact(version.method),
        "requests": sorted(r.id for r in requests),
        "forget_train": forget_train.accuracy() if forget_train else None,
        "weight_distance": _weight_distances(session, model, version, before, after),
        "cost": _cost(session, model, version),
        "method_metrics": _method_results(session, model, version),
    }
    classes = sorted({c for r in requests for c in r.target_classes})
    if classes:
        metrics.update(_class_metrics(session, model, classes, version, parent if before else None))
        metrics["relearn"] = _relearn(model, classes, forget_train, after)
        metrics["relearn_epochs"] = metrics["relearn"].get("epochs")
    else:
        metrics.update(_file_metrics(parent, forget_train))
    return metrics


def _load_both(
    session: Session, model: Model, version: ModelVersion, parent: ModelVersion
) -> tuple[list[torch.nn.Module], list[torch.nn.Module] | None]:
    """Both versions' constituents; one kept unchanged (same key) is loaded once and shared,
    read-only. ``before`` is None when the parent's weights are gone (purged)."""
    dev = device()
    loaded: dict[str, torch.nn.Module] = {}

    def constituents(of: ModelVersion) -> list[torch.nn.Module]:
        nets = []
        for checkpoint in final_checkpoints(session, of, model.recipe.slices):
            if checkpoint.key not in loaded:
                net = fresh_constituent(model, checkpoint.shard)
                load_checkpoint(store().get(CHECKPOINTS, checkpoint.key), net, None, "cpu")
                loaded[checkpoint.key] = net.to(dev).eval()
            nets.append(loaded[checkpoint.key])
        return nets

    after = constituents(version)
    try:
        return after, constituents(parent)
    except KeyError:  # report "after" only
        log.warning("version %s: parent weights missing, no before/after", version.id)
        return after, None


def _is_exact(method: str) -> bool:
    try:
        return get_method(method).exact
    except ValueError:
        return False


def _predict(
    nets: Sequence[torch.nn.Module], images: torch.Tensor, model: Model, dev: torch.device
) -> torch.Tensor:
    probas = [predict_proba(net, images, device=dev) for net in nets]
    return aggregate(probas, model.recipe.aggregation).argmax(1)


def _evaluate(
    model: Model,
    images: torch.Tensor,
    labels: torch.Tensor,
    before: Sequence[torch.nn.Module] | None,
    after: Sequence[torch.nn.Module],
) -> Evaluation:
    dev = device()
    return Evaluation(
        labels=labels,
        before=_predict(before, images, model, dev) if before is not None else None,
        after=_predict(after, images, model, dev),
    )


def _forget_train(
    session: Session,
    model: Model,
    parent: ModelVersion,
    request_ids: list[str],
    before: Sequence[torch.nn.Module] | None,
    after: Sequence[torch.nn.Module],
) -> Evaluation | None:
    """Both versions on the forgotten *training* samples (the forget set D_f)."""
    found = session.execute(
        select(Sample.id, Sample.sha256)
        .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
        .join(
            ManifestEntry,
            (ManifestEntry.sample_id == Sample.id) & (ManifestEntry.version_id == parent.id),
        )
        .where(DeletionTarget.request_id.in_(request_ids), Sample.state == SampleState.ACTIVE)
        .distinct()  # coalesced requests may name the same sample
        .order_by(Sample.sha256)
    ).all()
    ids = [sample_id for sample_id, _ in found]
    if not ids:
        return None
    rows = sample_rows(session, ids)
    images, labels = load_tensors(get_settings(), model.dataset, rows, model.recipe.image_size)
    evaluation = _evaluate(model, images, labels, before, after)
    evaluation.images = images
    return evaluation


def _test_split(
    session: Session, model: Model, version: ModelVersion, parent: ModelVersion | None
) -> Evaluation:
    """Both versions on the active test split, from the constituents' cached test predictions
    where they are still valid (the new version's were just made by its own evaluation)."""
    settings = get_settings()
    rows = sample_rows(session, active_test_ids(session, model.dataset_id))
    labels = torch.tensor([r.class_index for r in rows], dtype=torch.int64)
    images: list[torch.Tensor] = []

    def decode() -> torch.Tensor:
        if not images:
            images.append(load_tensors(settings, model.dataset, rows, model.recipe.image_size)[0])
        return images[0]

    def predicted(of: ModelVersion) -> torch.Tensor:
        found = split_predictions(session, store(), model, of, rows, decode, device(settings))
        return aggregate(found.probas, model.recipe.aggregation).argmax(1)

    return Evaluation(
        labels=labels,
        before=predicted(parent) if parent is not None else None,
        after=predicted(version),
    )


def _class_metrics(
    session: Session,
    model: Model,
    forgotten: list[str],
    version: ModelVersion,
    parent: ModelVersion | None,
) -> dict[str, Any]:
    """Test-set accuracy on the forgotten classes, the retained ones and overall, per class, and
    where the forgotten classes' test images are now predicted."""
    classes = model.dataset.classes
    ev = _test_split(session, model, version, parent)
    labels = ev.labels
    indices = torch.tensor([classes.index(c) for c in forgotten])
    is_forgotten = torch.isin(labels, indices)
    per_class = {name: ev.accuracy(labels == index) for index, name in enumerate(classes)}
    distribution = {
        stage: prediction_distribution(pred[is_forgotten], classes)
        for stage, pred in (("before", ev.before), ("after", ev.after))
        if pred is not None
    }
    by_class = {
        name: {
            stage: prediction_distribution(pred[labels == classes.index(name)], classes)
            for stage, pred in (("before", ev.before), ("after", ev.after))
            if pred is not None
        }
        for name in forgotten
    }
    return {
        "forget_classes": forgotten,
        "evaluated_on": "held-out test split (forget = test images of the forgotten classes)",
        "forget": ev.accuracy(is_forgotten),
        "retain": ev.accuracy(~is_forgotten),
        "test": ev.accuracy(),
        "per_class": per_class,
        "forget_prediction_distribution": distribution,
        "forget_prediction_distribution_per_class": by_class,
        "now_predicted_as": {
            name: _top_class(by_class[name].get("after", {}), exclude=name) for name in forgotten
        },
    }


def _top_class(distribution: dict[str, float], exclude: str) -> str | None:
    """The class a forgotten class's images now mostly go to (other than itself)."""
    others = {k: v for k, v in distribution.items() if k != exclude and v > 0}
    return max(others, key=lambda k: others[k]) if others else None


def _file_metrics(parent: ModelVersion, forget_train: Evaluation | None) -> dict[str, Any]:
    """File deletions: accuracy on the deleted files, and the parent's test accuracy as its own
    evaluation recorded it (the new version's is its `test` metric; no extra inference)."""
    test_before = (parent.metrics or {}).get("test") or {}
    return {
        "forget": forget_train.accuracy() if forget_train else None,
        "test_before": test_before.get("accuracy"),
    }


def _weight_distances(
    session: Session,
    model: Model,
    version: ModelVersion,
    before: Sequence[torch.nn.Module] | None,
    after: Sequence[torch.nn.Module],
) -> dict[str, Any] | None:
    """Layer-wise distance of each new constituent to the parent's: a summary per constituent
    and the per-layer table of the first constituent that changed."""
    if before is None:
        return None
    summaries, first_changed = [], None
    for shard, (new, old) in enumerate(zip(after, before, strict=True)):
        layers = layer_distances(new, old)
        total = math.sqrt(sum(d["l2"] ** 2 for d in layers.values()))
        finite = [d["relative"] for d in layers.values() if math.isfinite(d["relative"])]
        summaries.append(
            {
                "shard": shard,
                "changed": total > 0,
                "l2": total,
                "mean_relative": sum(finite) / len(finite) if finite else None,
                "max_relative": max(finite) if finite else None,
            }
        )
        if total > 0 and first_changed is None:
            first_changed = (shard, layers)
    shard, layers = first_changed if first_changed else (0, layer_distances(after[0], before[0]))
    return {
        "to_original": {"constituents": summaries, "layers": {"shard": shard, "per_layer": layers}},
        # A full retrain is not run alongside a request; the benchmark compares with one.
        "to_retrain": None,
    }


def _relearn(
    model: Model,
    forgotten: list[str],
    forget_train: Evaluation | None,
    after: Sequence[torch.nn.Module],
) -> dict[str, Any]:
    """Relearn time: epochs of fine-tuning on the forgotten training images until the model
    gets back to RELEARN_TARGET_FRACTION of the original's accuracy on them. Only for a
    monolithic model (for an ensemble it would need every constituent relearned)."""
    if model.recipe.shards != 1:
        return {"skipped": "relearn time is measured on monolithic models only"}
    if forget_train is None or forget_train.before is None or forget_train.images is None:
        return {"skipped": "no forgotten training images or no original model to compare with"}
    original = forget_train.accuracy()["before"] or 0.0
    images = forget_train.images
    labels = forget_train.labels
    seed = derived_seed(model.recipe.seed, _RELEARN_SEED_DOMAIN)
    if images.shape[0] > RELEARN_MAX_SAMPLES:
        pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
        images, labels = images[pick[:RELEARN_MAX_SAMPLES]], labels[pick[:RELEARN_MAX_SAMPLES]]
    target = RELEARN_TARGET_FRACTION * original
    epochs = relearn_epochs(
        after[0],
        images,
        labels,
        target_accuracy=target,
        max_epochs=RELEARN_MAX_EPOCHS,
        lr=RELEARN_LR,
        batch_size=model.recipe.training.batch_size,
        seed=seed,
        device=device(),
    )
    return {
        "epochs": epochs,
        "target_accuracy": target,
        "original_accuracy": original,
        "max_epochs": RELEARN_MAX_EPOCHS,
        "lr": RELEARN_LR,
        "samples": int(images.shape[0]),
        "classes": forgotten,
        "note": "SGD fine-tuning of a copy on the forgotten training images only; "
        "null epochs means not regained within max_epochs",
    }


def _cost(session: Session, model: Model, version: ModelVersion) -> dict[str, Any]:
    work = shard_work(session, version.id, model.recipe.slices)
    started = as_utc(version.started_at)
    exact = _is_exact(version.method)
    return {
        "wall_time_s": (now() - started).total_seconds(),
        "compute_seconds": work.train_seconds,
        "slowest_constituent_seconds": work.slowest_shard_seconds,
        "constituents_changed": work.retrained_shards,
        "samples_touched": work.sample_passes,
        "samples_touched_unit": (
            "sample passes (samples x epochs) of the retraining"
            if exact
            else "training samples handed to the method (forget + retain)"
        ),
    }


def _method_results(session: Session, model: Model, version: ModelVersion) -> dict[str, Any] | None:
    """What the method reported on each constituent (approximate methods only)."""
    results = {}
    for checkpoint in final_checkpoints(session, version, model.recipe.slices):
        try:
            blob = store().get(METHOD_RESULTS, checkpoint.key)
        except KeyError:
            continue
        results[str(checkpoint.shard)] = json.loads(blob)
    return results or None
