"""Efficacy and membership inference of a deletion, measured on both versions.

The previous version (before) and the new one (after) score the same evaluation sets; the
attacks read the mean softmax of the constituents. A failure to measure is written into the
report's notes rather than raised, so a missing image or checkpoint cannot stop the deletion
from completing with its proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from worker.audit import mia
from worker.audit.builder import mia_section
from worker.audit.context import AuditContext, error_kind
from worker.audit.efficacy import efficacy_section
from worker.audit.evalsets import (
    EvalSets,
    Stage,
    accuracy,
    eval_sets,
    predict_version,
    sample_losses,
)
from worker.audit.reference import (
    NO_REFERENCE_NOTE,
    gap_section,
    reference_wanted,
    train_reference,
)
from worker.flows.common import log

__all__ = ["GOOD_VALUES", "N_BOOTSTRAP", "Evidence", "measure"]

# Bootstrap resamples behind every attack's 95 % intervals.
N_BOOTSTRAP = 200
GOOD_VALUES = (
    "ROC AUC near 0.5 (chance), advantage near 0 and TPR at 1% FPR near 0.01 mean the attacker "
    "cannot tell the forgotten samples from never-seen test samples; the reference is what a "
    "model retrained without the data gives."
)


# --------------------------------------------------------------------------- membership inference


def _attacks(
    stage: Stage, sets: EvalSets, seed: int, notes: list[str], label: str
) -> dict[str, mia.AttackResult]:
    forget, test = sets.part("forget"), sets.part("test")
    features = mia.features_from_proba(stage.mean, sets.labels)
    fm, fn = features[forget], features[test]
    options: dict[str, Any] = {"n_bootstrap": N_BOOTSTRAP, "seed": seed}
    results: dict[str, mia.AttackResult] = {}
    runs = (
        ("loss_threshold", lambda: mia.loss_threshold_attack(fm[:, 0], fn[:, 0], **options)),
        ("logistic_regression", lambda: mia.logistic_regression_attack(fm, fn, **options)),
    )
    for name, run in runs:
        try:
            results[name] = run()
        except ValueError as exc:  # too few samples for this attack
            notes.append(f"The {name} attack was not run {label}: {exc}.")
    return results


def _reference_test(
    before: Stage | None, after: Stage, sets: EvalSets, ctx: AuditContext
) -> dict[str, Any] | None:
    """SISA's free reference models: for each forgotten sample, the parent's constituents of the
    other shards never saw it. Compares its loss under its own shard's constituent, before and
    after, with its losses under those reference models."""
    n = sets.sizes["forget"]
    if before is None or ctx.shards < 2 or n == 0 or ctx.is_class_target:
        return None
    forget = sets.part("forget")
    labels = sets.labels[forget]
    losses_before = np.stack([sample_losses(p[forget], labels) for p in before.per_shard], axis=1)
    losses_after = np.stack([sample_losses(p[forget], labels) for p in after.per_shard], axis=1)
    own = sets.member_shards
    rows = np.arange(n)
    others = np.array([[j for j in range(ctx.shards) if j != s] for s in own], dtype=np.int64)
    out_losses = losses_before[rows[:, None], others]
    result = mia.reference_model_test(losses_after[rows, own], out_losses)
    prior = mia.reference_model_test(losses_before[rows, own], out_losses)
    result["stage"] = "after"
    result["reference_models"] = (
        "the parent version's constituents of the other shards, which never trained on the sample"
    )
    result["before"] = {
        k: prior[k]
        for k in ("fraction_flagged", "mean_percentile", "median_percentile", "mean_z", "status")
    }
    return result


def _mia_section(
    before: Stage | None,
    after: Stage,
    sets: EvalSets,
    ctx: AuditContext,
    retrain: Stage | None = None,
) -> dict[str, Any]:
    notes = ctx.notes
    if sets.sizes["forget"] == 0 or sets.sizes["test"] == 0:
        notes.append(
            "No membership inference: the request names no sample the previous version trained "
            "on, or no held-out test sample of the same classes is left."
        )
        return mia_section({}, {}, None, None)
    b = _attacks(before, sets, ctx.seed, notes, "before unlearning") if before else {}
    a = _attacks(after, sets, ctx.seed, notes, "after unlearning")
    r = _attacks(retrain, sets, ctx.seed, notes, "on the reference retrain") if retrain else None
    section = mia_section(
        b,
        a,
        _reference_test(before, after, sets, ctx),
        r,
        members=f"{sets.sizes['forget']} forgotten training sample(s)",
        nonmembers=f"{sets.sizes['test']} held-out test sample(s) of the same class(es)",
    )
    section["good_values"] = GOOD_VALUES
    section["attacks_described"] = {
        "loss_threshold": "threshold on the per-sample cross-entropy loss (low loss = member)",
        "logistic_regression": "logistic regression on loss, max confidence, entropy and "
        "true-class confidence, scored out-of-fold (5-fold)",
    }
    section["model_output"] = "mean softmax of the constituents"
    return section


# --------------------------------------------------------------------------- both sections


def _loss_histograms(before: Stage | None, after: Stage, sets: EvalSets) -> dict[str, Any]:
    return {
        stage: {
            name: sample_losses(s.mean[sets.part(name)], sets.labels[sets.part(name)])
            for name in ("forget", "retain", "test")
        }
        for stage, s in (("before", before), ("after", after))
        if s is not None
    }


@dataclass
class Evidence:
    """The two measured sections, and the per-sample losses the figures draw."""

    efficacy: dict[str, Any] = field(default_factory=dict)
    mia: dict[str, Any] = field(default_factory=lambda: mia_section({}, {}, None, None))
    losses: dict[str, Any] | None = None


def measure(session: Session, ctx: AuditContext) -> Evidence:
    """Efficacy and membership inference; a failure is reported in the notes, not raised, so a
    missing image or checkpoint cannot stop the deletion from completing with its proof."""
    try:
        sets = eval_sets(session, ctx)
        known: dict[str, np.ndarray] = {}
        how = ctx.model.recipe.aggregation
        before = _before_stage(session, ctx, sets, known, how)
        after = Stage.of(predict_version(session, ctx, ctx.version, sets, known), how)
        retrain = _reference(session, ctx, sets)
        efficacy = efficacy_section(session, before, after, sets, ctx)
        section = _mia_section(before, after, sets, ctx, retrain[0] if retrain else None)
        # Which samples were scored, and the caps (settings audit_max_*) that bounded them.
        section["evaluation_sets"] = {"sizes": dict(sets.sizes), "caps": dict(sets.caps)}
        if retrain is not None:
            for part in ("forget", "retain"):
                efficacy[part]["retrain"] = accuracy(retrain[0], sets.labels, sets.part(part))
            efficacy["reference_retrain"] = gap_section(
                session, ctx, sets, after, retrain[0], retrain[1], section
            )
        return Evidence(
            efficacy=efficacy, mia=section, losses=_loss_histograms(before, after, sets)
        )
    except Exception as exc:  # the type only: messages can carry file paths
        log.error(
            "audit of request %s: could not score samples (%s)", ctx.request.id, error_kind(exc)
        )
        ctx.notes.append(
            f"Efficacy and membership inference could not be measured ({error_kind(exc)})."
        )
        return Evidence()


def _reference(session: Session, ctx: AuditContext, sets: EvalSets) -> tuple[Stage, float] | None:
    """The reference retrain when the request asked for one (a failure is a note)."""
    if ctx.exact:
        return None
    if not reference_wanted(ctx):
        ctx.notes.append(NO_REFERENCE_NOTE)
        return None
    try:
        return train_reference(session, ctx, sets)
    except Exception as exc:  # the type only: messages can carry file paths
        log.error("audit of request %s: no reference retrain (%s)", ctx.request.id, error_kind(exc))
        ctx.notes.append(f"The reference retrain could not be trained ({error_kind(exc)}).")
        return None


def _before_stage(
    session: Session, ctx: AuditContext, sets: EvalSets, known: dict[str, np.ndarray], how: str
) -> Stage | None:
    """The previous version on the evaluation sets; None (and a note) when its weights are gone,
    so the report still measures the new version."""
    try:
        return Stage.of(predict_version(session, ctx, ctx.parent, sets, known), how)
    except Exception as exc:  # the type only: messages can carry file paths
        log.error(
            "audit of request %s: previous version not scored (%s)", ctx.request.id, error_kind(exc)
        )
        ctx.notes.append(
            f"The previous version's weights could not be loaded ({error_kind(exc)}): every 'before' "
            "figure and the reference-model test are missing."
        )
        return None
