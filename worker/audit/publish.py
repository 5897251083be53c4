"""The audit step of a deletion: measure, build, sign, chain and store the request's report.

:func:`publish_report` runs inside ``complete_batch`` once per request, after the new version is
ready and before the forgotten files are erased and the superseded checkpoints purged, so the
parent version's constituents and the forgotten images can still be measured. It

1. recomputes the lineage proof from the stored manifest and checkpoint records (exact methods,
   :mod:`worker.audit.lineage`);
2. measures efficacy and membership inference on the parent (before) and the new version
   (after), on samples of bounded size so the audit stays a small fraction of the deletion
   (:mod:`worker.audit.evidence`);
3. builds the body (:mod:`worker.audit.builder`), seals it into the deployment's hash chain with
   the Ed25519 signing key, renders the HTML page and inserts the ``AuditReport`` row in the
   caller's transaction, so the report and the request's completion commit together.

Privacy: the report and the logs name samples by content hash and counts only. File paths are
read solely to decode images; they never reach the report, an exception text in it, or a log
line.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.audit.integrity import SigningKey, seal_report, verify_envelope
from app.db.models import AuditReport, DeletionRequest, ModelVersion
from app.services.keys import signing_key
from app.settings import get_settings
from worker.audit.builder import build_plots, build_report_body
from worker.audit.context import (
    AuditContext,
    aware,
    error_kind,
    load_context,
    method_section,
    request_section,
    versions_section,
)
from worker.audit.cost import full_retrain_passes, report_cost_section, shard_work
from worker.audit.evidence import Evidence, measure
from worker.audit.html import render_report_html
from worker.audit.lineage import compute_lineage
from worker.flows.common import device, log

__all__ = ["CHAIN_LOCK_ID", "append_report", "publish_report"]

# Key of the PostgreSQL advisory lock that serialises appends to the deployment's report chain.
CHAIN_LOCK_ID = 0x666F7267  # "forg"


# --------------------------------------------------------------------------- chain and storage


def _lock_chain(session: Session, request: DeletionRequest) -> None:
    """Serialise appends to the report chain until the caller's transaction ends.

    PostgreSQL: a transaction-level advisory lock. SQLite allows one writer at a time, so any
    write takes the database's write lock, held until commit; touching the request row does.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_ID})
        return
    session.execute(
        update(DeletionRequest)
        .where(DeletionRequest.id == request.id)
        .values(updated_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def _next_sequence(session: Session, last: int | None) -> int:
    """The number of the report after one numbered ``last``; the migration that added the
    numbers numbered every report before it, so an unnumbered last report only occurs in a
    database built without it: its position is then the count of reports."""
    if last is not None:
        return last + 1
    return (session.scalar(select(func.count()).select_from(AuditReport)) or 0) + 1


def append_report(
    session: Session,
    request: DeletionRequest,
    body: dict[str, Any],
    key: SigningKey,
    plots: dict[str, bytes],
) -> AuditReport:
    """Seal ``body`` after the chain's current head, as the next numbered report, render its
    page and add the row to ``session``; the chain stays locked until the caller's transaction
    ends, so no two reports get one number or one predecessor."""
    _lock_chain(session, request)
    last = session.execute(
        select(AuditReport.sha256, AuditReport.sequence).order_by(AuditReport.id.desc()).limit(1)
    ).first()
    previous = last.sha256 if last else None
    sequence = _next_sequence(session, last.sequence if last else None)
    envelope = seal_report(body, previous_sha256=previous, key=key, sequence=sequence)
    page = render_report_html(
        envelope, plots, verification=verify_envelope(envelope, key.public_pem())
    )
    row = AuditReport(
        request_id=request.id,
        sha256=envelope["integrity"]["sha256"],
        previous_sha256=previous,
        sequence=sequence,
        envelope=envelope,
        html=page,
    )
    session.add(row)
    session.flush()
    return row


# --------------------------------------------------------------------------- the report


def _cost(session: Session, ctx: AuditContext, audit_seconds: float) -> dict[str, Any]:
    version = ctx.version
    created = aware(ctx.request.created_at)
    started, completed = aware(version.started_at), aware(version.completed_at)
    return report_cost_section(
        shard_work(session, version.id, ctx.slices),
        full_retrain_passes(session, version.id, ctx.slices, ctx.model.recipe.epochs_per_slice),
        wall_time_s=(datetime.now(UTC) - created).total_seconds() if created else None,
        unlearning_wall_time_s=(completed - started).total_seconds()
        if started and completed
        else None,
        audit_seconds=audit_seconds,
        device=str(device(get_settings())),
        plan=ctx.request.plan or {},
        exact=ctx.exact,
        phases=ctx.request.timings,
    )


def _plots(evidence: Evidence, ctx: AuditContext) -> dict[str, bytes]:
    try:
        return build_plots(
            losses=evidence.losses,
            mia=evidence.mia,
            per_class_accuracy=evidence.efficacy.get("per_class"),
            prediction_distribution=evidence.efficacy.get("forget_prediction_distribution"),
            forgotten_classes=list(ctx.request.target_classes or []),
        )
    except Exception as exc:  # figures are a convenience; the signed JSON is the report
        log.error("audit of request %s: figures failed (%s)", ctx.request.id, error_kind(exc))
        ctx.notes.append(f"The figures could not be drawn ({error_kind(exc)}).")
        return {}


def _standard_notes(ctx: AuditContext) -> list[str]:
    notes = [
        "Samples are identified by the sha256 of their content; file names are not recorded.",
    ]
    if not ctx.exact:
        notes.append(
            f"{ctx.version.method} is an approximate method: the model was modified, not rebuilt "
            "without the data, so this report carries no lineage proof."
        )
    if ctx.version.method == "retrain":
        notes.append("The method is a full retrain: 'after' is itself the retrain reference.")
    if ctx.request.plan.get("coalesced_with"):
        notes.append(
            "This request was served by one retrain together with the requests listed in "
            "coalesced_with; the cost section is that shared retrain's."
        )
    return notes


def publish_report(session: Session, request: DeletionRequest, version: ModelVersion) -> None:
    """Build, sign, chain and store the audit report of ``request`` (see the module docstring).

    Idempotent: a request that already has a report keeps it. The row is added to ``session``
    and committed by the caller together with the rest of its unit of work.
    """
    if session.scalar(select(AuditReport.id).where(AuditReport.request_id == request.id)):
        log.info("request %s already has an audit report", request.id)
        return
    began = time.perf_counter()
    ctx = load_context(session, request, version)
    lineage = compute_lineage(session, version, ctx.target_hashes(), exact=ctx.exact)
    evidence = measure(session, ctx)
    plots = _plots(evidence, ctx)
    body = build_report_body(
        request=request_section(ctx),
        method=method_section(ctx),
        versions=versions_section(ctx),
        lineage=lineage,
        efficacy=evidence.efficacy,
        membership_inference=evidence.mia,
        cost=_cost(session, ctx, time.perf_counter() - began),
        notes=[*_standard_notes(ctx), *ctx.notes],
    )
    row = append_report(session, request, body, signing_key(get_settings()), plots)
    log.info(
        "request %s: audit report %s (lineage %s, %d samples, %.1f s)",
        request.id,
        row.sha256[:16],
        lineage.get("status"),
        len(ctx.targets),
        time.perf_counter() - began,
    )
