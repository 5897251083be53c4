"""The proof an exact deletion must hold before its version is made current: the lineage,
recomputed from the new version's stored manifest and checkpoint records, contains none of the
batch's deleted content hashes. Reasons name hashes, shards and slices, never file names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import DeletionTarget, ModelVersion, Sample
from worker.audit.lineage import compute_lineage

MAX_LISTED = 10


def batch_deleted_hashes(session: Session, request_ids: Sequence[str]) -> list[str]:
    """Content hashes of every sample the batch's requests target (whatever their state now:
    a resumed batch may already have marked some erasing)."""
    return sorted(
        set(
            session.scalars(
                select(Sample.sha256)
                .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
                .where(DeletionTarget.request_id.in_(request_ids))
            ).all()
        )
    )


def _describe(violation: dict[str, Any]) -> str:
    if "sample_sha256" in violation:
        return f"shard {violation['shard']} still holds sample {violation['sample_sha256']}"
    return f"shard {violation['shard']} slice {violation.get('slice')}: {violation['problem']}"


def lineage_refusal(
    session: Session, version: ModelVersion, request_ids: Sequence[str]
) -> str | None:
    """None when the version's lineage is verified; otherwise why not, for the request's
    status reason."""
    section = compute_lineage(
        session, version, batch_deleted_hashes(session, request_ids), exact=True
    )
    if section["verified"]:
        return None
    violations = section.get("violations") or []
    shown = "; ".join(_describe(v) for v in violations[:MAX_LISTED])
    more = f" (and {len(violations) - MAX_LISTED} more)" if len(violations) > MAX_LISTED else ""
    return (
        f"lineage not verified for version {version.number}: {len(violations)} violation(s): "
        f"{shown or 'no constituent listed'}{more}"
    )
