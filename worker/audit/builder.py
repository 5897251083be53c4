"""Assemble the audit report body (and its figures) from plain inputs.

Pure functions: no database, no torch, no files. With the lineage and cost sections of
:mod:`worker.audit.lineage` and :mod:`worker.audit.cost`, a worker typically does::

    lineage = lineage_section([LineageConstituent.from_samples(...), ...], deleted, exact=True)
    mia = mia_section(
        {"loss_threshold": loss_threshold_attack(forget_before, test_before)},
        {"loss_threshold": loss_threshold_attack(forget_after, test_after)},
        reference_model_test(target_losses, out_losses),  # SISA only, else None
        None,                                              # or results on a full retrain
    )
    body = build_report_body(request=..., method=..., versions=..., lineage=lineage,
                             efficacy=..., membership_inference=mia, cost=cost_section(...),
                             notes=[...])
    envelope = app.audit.integrity.seal_report(body, previous_sha256=prev, key=key)
    plots = build_plots(losses=..., mia=mia, per_class_accuracy=..., prediction_distribution=...)
    page = worker.audit.html.render_report_html(envelope, plots)

matplotlib is imported only when :func:`build_plots` runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.audit.schema import ReportBody
from worker.audit.mia import AttackResult
from worker.evaluation.finite import finite_reason

__all__ = [
    "build_plots",
    "build_report_body",
    "mia_section",
    "prediction_distribution",
]


# --------------------------------------------------------------------------- membership inference


def _res(x: AttackResult | Mapping[str, Any] | None) -> dict | None:
    if x is None:
        return None
    if isinstance(x, AttackResult):
        return x.to_dict()
    return dict(x)


def _verdict(name: str, before: dict | None, after: dict | None, retrain: dict | None) -> dict:
    if after is None or after.get("auc") is None:
        return {
            "attack": name,
            "status": "inconclusive",
            "text": f"{name}: no result after unlearning.",
        }
    a = float(after["auc"])
    lo, hi = [*(after.get("auc_ci") or []), None, None][:2]
    have_ci = lo is not None and hi is not None
    head = f"{name}: ROC AUC "
    if before is not None and before.get("auc") is not None:
        head += f"{float(before['auc']):.2f} before, "
    head += f"{a:.2f} after unlearning"
    head += f" (95% CI {lo:.2f}-{hi:.2f})" if have_ci else ""
    if not have_ci:
        lo = hi = a
    r = retrain.get("auc") if retrain else None
    if r is not None:
        r = float(r)
        head += f"; a model retrained without the data gives {r:.2f}"
        if lo - 0.02 <= r <= hi + 0.02:
            status = "consistent_with_retrain"
            tail = "the unlearned model leaks no more to this attack than a retrained one."
        elif lo > r and lo > 0.5:
            status = "residual_signal"
            tail = (
                "the forgotten samples are still easier to recognise than after a retrain: "
                "some of their influence remains."
            )
        elif hi < r and hi < 0.5:
            status = "over_forgetting"
            tail = (
                "the forgotten samples look less like training data than never-seen samples, "
                "unlike after a retrain; this difference can itself reveal the unlearning."
            )
        else:
            status = "differs_from_retrain"
            tail = "the result differs from a retrain's."
    elif lo <= 0.5 <= hi or (not have_ci and abs(a - 0.5) < 0.05):
        status = "indistinguishable"
        tail = "the attacker cannot tell the forgotten samples from never-seen test samples."
    elif lo > 0.5:
        status = "residual_signal"
        tail = (
            "the attacker still tells the forgotten samples from never-seen test samples better "
            "than chance; compare with what a retrained model gives (a train/test gap of other "
            "data can also cause this)."
        )
    else:
        status = "over_forgetting"
        tail = (
            "the forgotten samples have higher loss than never-seen test samples, which can "
            "itself reveal that they were unlearned."
        )
    n = int(after.get("n_members") or 0)
    if n < 30:
        tail += f" Only {n} forgotten sample(s): little statistical power."
    return {"attack": name, "status": status, "text": f"{head}: {tail}"}


def mia_section(
    before: dict[str, AttackResult],
    after: dict[str, AttackResult],
    reference: dict | None,
    retrain_after: dict[str, AttackResult] | None,
    *,
    members: str = "forget set",
    nonmembers: str = "held-out test set",
) -> dict:
    """Membership-inference section: every attack before / after (/ on a full retrain), the SISA
    reference-model test when given, and one plain-language verdict per attack.

    Values may be ``AttackResult`` objects or their ``to_dict()``. Verdict statuses:
    ``indistinguishable`` (after-unlearning AUC interval contains 0.5), ``residual_signal``,
    ``over_forgetting`` (AUC interval below 0.5), and with a retrain to compare with
    ``consistent_with_retrain`` / ``differs_from_retrain``; ``inconclusive`` when there is no
    after-unlearning result.
    """
    retrain_after = retrain_after or {}
    names: list[str] = []
    for d in (before, after, retrain_after):
        for k in d:
            if k not in names:
                names.append(k)
    attacks: dict[str, dict] = {}
    verdicts: list[dict] = []
    for name in names:
        b, a, r = _res(before.get(name)), _res(after.get(name)), _res(retrain_after.get(name))
        attacks[name] = {"before": b, "after": a, "retrain": r}
        verdicts.append(_verdict(name, b, a, r))
    ref = dict(reference) if reference is not None else None
    if ref is not None:
        verdicts.append(
            {
                "attack": str(ref.get("test", "reference_model_percentile")),
                "status": ref.get("status") or "inconclusive",
                "text": str(ref.get("interpretation", "")),
            }
        )
    interpretation = (
        f"The attacks try to tell the {members} (members) from the {nonmembers} (non-members) "
        "from the model's per-sample loss or confidence. An AUC near 0.5 means the attacker "
        "cannot tell forgotten samples from never-seen test samples; the reference point is "
        "what a model retrained without the data gives."
    )
    return {
        "members": members,
        "nonmembers": nonmembers,
        "attacks": attacks,
        "reference_model_test": ref,
        "verdicts": verdicts,
        "interpretation": interpretation,
    }


# --------------------------------------------------------------------------- small helpers


def prediction_distribution(
    predictions: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """class name -> fraction of ``predictions`` (class indices) equal to it; all classes listed."""
    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    k = len(class_names)
    if pred.size and (pred.min() < 0 or pred.max() >= k):
        raise ValueError("prediction index out of range")
    counts = np.bincount(pred, minlength=k) if pred.size else np.zeros(k, dtype=np.int64)
    total = max(int(pred.size), 1)
    return {str(c): float(counts[i]) / total for i, c in enumerate(class_names)}


def _plain(obj: Any, reasons: dict[str, str] | None = None, where: str = "") -> Any:
    """numpy and tuples to JSON types; non-finite floats to None (with a reason per path in
    ``reasons``); dataclasses via to_dict."""
    if isinstance(obj, AttackResult):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {
            str(k): _plain(v, reasons, f"{where}.{k}" if where else str(k)) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj) if isinstance(obj, set | frozenset) else obj
        return [_plain(v, reasons, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), reasons, where)
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        if math.isfinite(v):
            return v
        if reasons is not None:
            reasons[where] = finite_reason(v)
        return None
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


# --------------------------------------------------------------------------- the body


def build_report_body(
    *,
    request: dict,
    method: dict,
    versions: dict,
    lineage: dict,
    efficacy: dict,
    membership_inference: dict,
    cost: dict,
    notes: list[str],
    generated_at: datetime | str | None = None,
) -> dict:
    """Validate the sections against :class:`app.audit.schema.ReportBody` and return the body as
    plain JSON types (ready for ``seal_report``).

    numpy scalars/arrays are converted, NaN/Infinity become null (each with a note giving its
    path and why), ``generated_at`` defaults to
    now (UTC). Raises ``pydantic.ValidationError`` when a section does not fit the schema (for
    instance a file name or any unknown field in ``request``).
    """
    if generated_at is None:
        generated_at = datetime.now(UTC).replace(microsecond=0)
    reasons: dict[str, str] = {}
    raw = _plain(
        {
            "generated_at": generated_at,
            "request": request,
            "method": method,
            "versions": versions,
            "lineage": lineage,
            "efficacy": efficacy,
            "membership_inference": membership_inference,
            "cost": cost,
        },
        reasons,
    )
    # A figure that is not a number is null in the report, and a note says which and why.
    raw["notes"] = [*map(str, notes), *(f"{k} is null: {v}" for k, v in sorted(reasons.items()))]
    return ReportBody.model_validate(raw).model_dump(mode="json")


# --------------------------------------------------------------------------- figures


def build_plots(
    *,
    losses: Mapping[str, Mapping[str, Any]] | None = None,
    mia: Mapping[str, Any] | None = None,
    per_class_accuracy: Mapping[str, Mapping[str, float | None]] | None = None,
    prediction_distribution: Mapping[str, float] | Mapping[str, Mapping[str, float]] | None = None,
    forgotten_classes: Sequence[str] = (),
) -> dict[str, bytes]:
    """Render the report's figures as PNG bytes, keyed as :func:`render_report_html` expects.

    - ``losses``: ``{stage: {set: per-sample losses}}``, stages e.g. "before" / "after"
      (/ "retrain"), sets e.g. "forget" / "retain" / "test" -> key ``loss_histograms``.
    - ``mia``: the dict returned by :func:`mia_section` (or just ``{"attacks": ...}``) -> one ROC
      figure per attack, key ``roc_<attack>``.
    - ``per_class_accuracy``: ``{"before": {class: acc}, "after": {...}, "retrain"?: {...}}``,
      or the efficacy section's ``per_class`` shape ``{class: {"before", "after", "retrain"}}``
      -> key ``per_class_accuracy``.
    - ``prediction_distribution``: ``{class: fraction}`` or ``{stage: {class: fraction}}`` for
      the forgotten samples -> key ``prediction_distribution``.
    - ``forgotten_classes`` are highlighted in the bar charts.

    Inputs left as None produce no figure. matplotlib is imported here, not at module import.
    """
    from worker.audit import plots as P

    out: dict[str, bytes] = {}
    if losses:
        out["loss_histograms"] = P.loss_histograms(losses)
    if mia:
        for name, stages in (mia.get("attacks") or {}).items():
            stages = stages or {}
            if not any(stages.get(s) for s in ("before", "after", "retrain")):
                continue
            out[f"roc_{name}"] = P.roc_plot(
                stages.get("before"), stages.get("after"), retrain=stages.get("retrain")
            )
    if per_class_accuracy:
        by_stage = _per_class_by_stage(per_class_accuracy)
        out["per_class_accuracy"] = P.per_class_accuracy_plot(
            by_stage.get("before") or {},
            by_stage.get("after") or {},
            retrain=by_stage.get("retrain"),
            highlight=forgotten_classes,
        )
    if prediction_distribution:
        out["prediction_distribution"] = P.prediction_distribution_plot(
            prediction_distribution, highlight=forgotten_classes
        )
    return out


_STAGES = ("before", "after", "retrain")


def _per_class_by_stage(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Accept {stage: {class: acc}} or {class: {stage: acc}}; return {stage: {class: acc}}."""
    if data and set(data) <= set(_STAGES):
        return {s: dict(v or {}) for s, v in data.items()}
    out: dict[str, dict[str, Any]] = {}
    for cls, triple in data.items():
        triple = triple or {}
        for s in _STAGES:
            if triple.get(s) is not None:
                out.setdefault(s, {})[str(cls)] = triple[s]
    if "retrain" in out:  # keep every class on every bar group
        for cls in data:
            out["retrain"].setdefault(str(cls), None)
    return out
