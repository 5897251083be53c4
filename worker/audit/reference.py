"""The reference retrain an approximate deletion can ask for (request option
``reference: "retrain"``): the exact retrain, trained in the same job, scored on the same
evaluation sets, and the gap to it per metric.

The retrain is the monolithic model rebuilt from scratch without the forgotten samples, with
the model's recipe and seed (what ``method: retrain`` would produce); it is never stored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.methods.reference import Reference, requested_reference
from app.db.models import DeletionTarget, ManifestEntry, Sample, VersionShard
from app.settings import get_settings
from worker.audit.context import AuditContext
from worker.audit.evalsets import EvalSets, Stage, accuracy
from worker.constituents import derived_seed, fresh_constituent
from worker.flows.common import device
from worker.flows.training import engine_recipe
from worker.samples import load_tensors, sample_rows
from worker.training.evaluate import predict_proba
from worker.training.trainer import make_optimizer, train_epochs

__all__ = ["NO_REFERENCE_NOTE", "gap_section", "reference_wanted", "train_reference"]

NO_REFERENCE_NOTE = (
    "No reference retrain was run, so the gap between this approximate result and an exact "
    "retrain is not measured (the request option reference: 'retrain' runs one on a "
    "monolithic model)."
)


def reference_wanted(ctx: AuditContext) -> bool:
    return not ctx.exact and requested_reference(ctx.request.options) is Reference.RETRAIN


def _retained_training_ids(session: Session, ctx: AuditContext) -> list[int]:
    """The parent's training samples less the request's, in the canonical training order."""
    targets = select(DeletionTarget.sample_id).where(DeletionTarget.request_id == ctx.request.id)
    return list(
        session.scalars(
            select(ManifestEntry.sample_id)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(
                ManifestEntry.version_id == ctx.parent.id,
                ManifestEntry.sample_id.not_in(targets),
            )
            .order_by(ManifestEntry.shard, ManifestEntry.slice, Sample.sha256)
        ).all()
    )


def train_reference(session: Session, ctx: AuditContext, sets: EvalSets) -> tuple[Stage, float]:
    """Train the exact retrain and score it on ``sets``; returns (stage, training seconds)."""
    settings = get_settings()
    model, recipe = ctx.model, ctx.model.recipe
    if recipe.shards != 1 or recipe.slices != 1:
        raise ValueError("a reference retrain needs a monolithic model")
    rows = sample_rows(session, _retained_training_ids(session, ctx))
    images, labels = load_tensors(settings, model.dataset, rows, recipe.image_size)
    dev = device(settings)
    began = time.perf_counter()
    net = fresh_constituent(model, 0).to(dev)
    training = engine_recipe(recipe.training)  # the same recipe the model was trained with
    train_epochs(
        net,
        make_optimizer(net, training),
        images,
        labels,
        epochs=recipe.epochs_per_slice,
        batch_size=training.batch_size,
        seed=derived_seed(recipe.seed, 0, 0),
        device=dev,
        recipe=training,
    )
    seconds = time.perf_counter() - began
    proba = predict_proba(net, sets.images, device=dev).numpy().astype(np.float64)
    return Stage.of([proba], recipe.aggregation), seconds


def _method_seconds(session: Session, ctx: AuditContext) -> float | None:
    total = session.scalar(
        select(func.sum(VersionShard.train_seconds)).where(
            VersionShard.version_id == ctx.version.id
        )
    )
    return float(total) if total else None


def _auc(section: dict[str, Any], attack: str, stage: str) -> float | None:
    result = (section.get("attacks", {}).get(attack) or {}).get(stage) or {}
    auc = result.get("auc")
    return float(auc) if auc is not None else None


def gap_section(
    session: Session,
    ctx: AuditContext,
    sets: EvalSets,
    after: Stage,
    retrain: Stage,
    retrain_seconds: float,
    mia: dict[str, Any],
) -> dict[str, Any]:
    """Per metric: the unlearned model, the retrain and |difference| in points; their mean over
    forget, retain and test accuracy and the loss-threshold AUC (as the SalUn/AMUN papers)."""
    metrics: dict[str, dict[str, float | None]] = {}
    for part in ("forget", "retain", "test"):
        a = accuracy(after, sets.labels, sets.part(part))
        r = accuracy(retrain, sets.labels, sets.part(part))
        metrics[f"{part}_accuracy"] = {"after": a, "retrain": r}
    for attack in ("loss_threshold", "logistic_regression"):
        metrics[f"mia_{attack}_auc"] = {
            "after": _auc(mia, attack, "after"),
            "retrain": _auc(mia, attack, "retrain"),
        }
    for row in metrics.values():
        a, r = row["after"], row["retrain"]
        row["gap_points"] = None if a is None or r is None else round(100 * abs(a - r), 3)
    averaged = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_loss_threshold_auc")
    gaps = [metrics[k]["gap_points"] for k in averaged]
    method_seconds = _method_seconds(session, ctx)
    return {
        "kind": "retrain",
        "statement": (
            "An exact retrain (from scratch without the forgotten samples, with the model's "
            "recipe and seed) was trained in the same job and scored on the same samples; "
            "accuracies on the evaluation sets of this report (test: held-out samples of the "
            "forgotten samples' classes)."
        ),
        "metrics": metrics,
        "average_gap_points": (
            round(sum(g for g in gaps if g is not None) / 4, 3) if None not in gaps else None
        ),
        "average_over": list(averaged),
        "retrain_seconds": round(retrain_seconds, 3),
        "method_seconds": method_seconds,
        "speedup_over_retrain": (
            round(retrain_seconds / method_seconds, 3) if method_seconds else None
        ),
    }
