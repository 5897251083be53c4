"""The efficacy section: accuracy on the forgotten, retained and test samples before and
after, per class, where the forgotten samples' predictions go, and the new version's own
forgetting metrics (computed when it was finalised)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import ModelVersion, Sample
from app.repositories.samples import active_test_ids
from worker.audit.builder import prediction_distribution
from worker.audit.context import AuditContext
from worker.audit.evalsets import EvalSets, Stage, accuracy

__all__ = ["efficacy_section"]


def _metric(version: ModelVersion, *path: str) -> Any:
    value: Any = version.metrics or {}
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _test_class_counts(session: Session, ctx: AuditContext) -> dict[int, int]:
    """Test images per class, as the versions' reported test figures count them (the
    validation split left out)."""
    ids = active_test_ids(session, ctx.model.dataset_id)
    return dict(
        session.execute(  # type: ignore[arg-type]
            select(Sample.class_index, func.count())
            .where(Sample.id.in_(ids))
            .group_by(Sample.class_index)
        ).all()
    )


def _weighted(per_class: dict[str, Any] | None, counts: dict[str, int]) -> float | None:
    if not per_class:
        return None
    pairs = [(float(a), n) for c, n in counts.items() if (a := per_class.get(c)) is not None]
    total = sum(n for _, n in pairs)
    return sum(a * n for a, n in pairs) / total if total else None


def efficacy_section(
    session: Session, before: Stage | None, after: Stage, sets: EvalSets, ctx: AuditContext
) -> dict[str, Any]:
    labels = sets.labels
    forget, retain, test = sets.part("forget"), sets.part("retain"), sets.part("test")
    parent, version = ctx.parent, ctx.version
    before_pc = _metric(parent, "test", "per_class") or {}
    after_pc = _metric(version, "test", "per_class") or {}
    efficacy: dict[str, Any] = {
        "forget": {
            "before": accuracy(before, labels, forget),
            "after": accuracy(after, labels, forget),
            "n": sets.sizes["forget"],
        },
        "retain": {
            "before": accuracy(before, labels, retain),
            "after": accuracy(after, labels, retain),
            "n": sets.sizes["retain"],
        },
        "test": {
            "before": _metric(parent, "test", "accuracy"),
            "after": _metric(version, "test", "accuracy"),
            "n": _metric(version, "test", "count"),
        },
        "per_class": {
            c: {"before": before_pc.get(c), "after": after_pc.get(c)} for c in ctx.classes
        },
    }
    # Where the forgotten samples' predictions go; for a class, its test images count too.
    pool = np.r_[forget, test] if ctx.is_class_target else np.arange(forget.start, forget.stop)
    if pool.size:
        efficacy["forget_prediction_distribution"] = {
            stage: prediction_distribution(s.predicted[pool], ctx.classes)
            for stage, s in (("before", before), ("after", after))
            if s is not None
        }
    if ctx.is_class_target:
        counts = _test_class_counts(session, ctx)
        kept = {
            ctx.classes[i]: n
            for i, n in counts.items()
            if ctx.classes[i] not in set(ctx.request.target_classes)
        }
        efficacy["test_retained_classes"] = {
            "before": _weighted(before_pc, kept),
            "after": _weighted(after_pc, kept),
            "n": sum(kept.values()),
        }
    efficacy.update(_forgetting_fields(_metric(version, "forgetting")))
    _note_test_set_change(parent, version, ctx.notes)
    return efficacy


def _forgetting_fields(forgetting: Any) -> dict[str, Any]:
    """The version's own forgetting metrics (computed when it was finalised): the fields the
    schema names are lifted into place, the whole record is kept beside them."""
    if not isinstance(forgetting, dict):
        return {}
    fields: dict[str, Any] = {"forgetting_metrics": forgetting}
    for key in ("weight_distance", "retrain_comparison", "method_metrics"):
        if isinstance(forgetting.get(key), dict):
            fields[key] = forgetting[key]
    relearn = forgetting.get("relearn_epochs")
    if isinstance(relearn, int | float) and not isinstance(relearn, bool):
        fields["relearn_epochs"] = float(relearn)
    return fields


def _note_test_set_change(parent: ModelVersion, version: ModelVersion, notes: list[str]) -> None:
    before_n, after_n = _metric(parent, "test", "count"), _metric(version, "test", "count")
    if before_n is not None and after_n is not None and before_n != after_n:
        notes.append(
            f"Test accuracy before is the previous version's own evaluation on {before_n} test "
            f"samples; after is measured on the {after_n} test samples active now."
        )
