"""Phase timings of deletion requests, recorded by the service itself as each phase ends.

``GET /v1/deletion-requests/{id}`` shows them, the audit report's cost section uses them and the
benchmarks read them. A coalesced batch shares its claim, retrain, evaluation and erasure
phases, so each of its requests carries the batch's figures for those; the audit is per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import DeletionRequest, VersionShard, as_utc


def add_phase(request: DeletionRequest, name: str, value: Any) -> None:
    """Set one phase on a request (a new dict, so SQLAlchemy sees the JSON change)."""
    request.timings = {**(request.timings or {}), name: value}


def add_batch_phase(session: Session, version_id: int, name: str, value: Any) -> None:
    for request in session.scalars(
        select(DeletionRequest).where(DeletionRequest.result_version_id == version_id)
    ).all():
        add_phase(request, name, value)


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` leaves the elapsed seconds in ``t["s"]``."""
    watch = {"s": 0.0}
    began = time.perf_counter()
    try:
        yield watch
    finally:
        watch["s"] = round(time.perf_counter() - began, 4)


def retrain_seconds(session: Session, version_id: int, slices: int) -> dict[str, float]:
    """Training (or method) seconds of each constituent this version changed."""
    shards = session.scalars(
        select(VersionShard)
        .where(VersionShard.version_id == version_id)
        .order_by(VersionShard.shard)
    ).all()
    return {
        str(s.shard): round(s.train_seconds, 4)
        for s in shards
        if s.restart_slice < slices or s.train_seconds > 0
    }


def finish(request: DeletionRequest) -> None:
    """The request's end-to-end time, from being stored to being completed."""
    if request.completed_at is not None and request.created_at is not None:
        total = as_utc(request.completed_at) - as_utc(request.created_at)
        add_phase(request, "total_s", round(total.total_seconds(), 4))
