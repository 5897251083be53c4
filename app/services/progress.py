"""Progress of a version's training, weighted by the slice-trainings each constituent still owes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ModelVersion, ShardStatus, VersionShard


def _units(first: int, last_exclusive: int) -> int:
    # Slice r trains on slices 0..r, so it costs r+1 units.
    return sum(r + 1 for r in range(first, last_exclusive))


def version_progress(session: Session, version: ModelVersion, slices: int) -> dict[str, Any]:
    shards = session.scalars(
        select(VersionShard)
        .where(VersionShard.version_id == version.id)
        .order_by(VersionShard.shard)
    ).all()
    total = done = 0.0
    detail = []
    for shard in shards:
        owed = float(_units(shard.restart_slice, slices))
        total += owed
        if shard.status == ShardStatus.DONE:
            finished = owed
        elif shard.current_slice is None:
            finished = 0.0
        else:
            finished = _units(shard.restart_slice, shard.current_slice) + shard.slice_fraction * (
                shard.current_slice + 1
            )
        done += finished
        if owed:
            detail.append(
                {
                    "shard": shard.shard,
                    "status": shard.status,
                    "restart_slice": shard.restart_slice,
                    "slice": shard.current_slice,
                    "slice_percent": round(100 * shard.slice_fraction, 1),
                }
            )
    percent = 100.0 if total == 0 else round(100 * done / total, 1)
    return {
        "version": version.number,
        "phase": version.status,
        "percent": percent,
        "shards": detail,
    }
