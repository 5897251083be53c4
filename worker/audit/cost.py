"""What building a version cost, and what a full retrain would have cost instead.

One reading of the per-constituent work records serves the version's own metrics, its
forgetting metrics and the audit report, so they cannot disagree about what was retrained.

Torch-free: database rows and numbers only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import ManifestEntry, VersionShard

__all__ = [
    "ShardWork",
    "cost_section",
    "full_retrain_passes",
    "report_cost_section",
    "shard_work",
]


@dataclass(frozen=True)
class ShardWork:
    """The training (or unlearning) work recorded for one version's constituents."""

    train_seconds: float
    """Summed over constituents: the compute spent, whatever ran in parallel."""
    sample_passes: int
    """Samples handed to training, once per epoch (for approximate methods: to the method)."""
    slowest_shard_seconds: float
    retrained_shards: list[int]
    """Shards that trained at least one slice, in shard order."""
    slices_retrained: int

    @property
    def seconds_per_sample_pass(self) -> float | None:
        return self.train_seconds / self.sample_passes if self.sample_passes else None


def shard_work(session: Session, version_id: int, slices: int) -> ShardWork:
    """Sum the version's per-shard records; a shard whose restart slice is ``slices`` was
    reused whole and trained nothing."""
    shards = session.scalars(
        select(VersionShard)
        .where(VersionShard.version_id == version_id)
        .order_by(VersionShard.shard)
    ).all()
    retrained = [s for s in shards if s.restart_slice < slices]
    return ShardWork(
        train_seconds=sum(s.train_seconds for s in shards),
        sample_passes=sum(s.samples_trained for s in shards),
        slowest_shard_seconds=max((s.train_seconds for s in shards), default=0.0),
        retrained_shards=[s.shard for s in retrained],
        slices_retrained=sum(slices - s.restart_slice for s in retrained),
    )


def full_retrain_passes(
    session: Session, version_id: int, slices: int, epochs_per_slice: int
) -> int:
    """Sample passes of training every constituent from scratch on the version's manifest
    (slice r trains on slices 0..r, ``epochs_per_slice`` times)."""
    sizes: dict[int, list[int]] = defaultdict(lambda: [0] * slices)
    for shard, slice_, n in session.execute(
        select(ManifestEntry.shard, ManifestEntry.slice, func.count())
        .where(ManifestEntry.version_id == version_id)
        .group_by(ManifestEntry.shard, ManifestEntry.slice)
    ).all():
        sizes[shard][slice_] = int(n)
    total = 0
    for per_slice in sizes.values():
        total += sum(sum(per_slice[: r + 1]) for r in range(slices))
    return total * epochs_per_slice


def cost_section(
    *,
    wall_time_s: float | None,
    samples_retrained: int | None,
    full_retrain_samples: int | None,
    shards_retrained: int | None = None,
    slices_retrained: int | None = None,
    full_retrain_wall_time_s_estimate: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The report's cost section; ``speedup`` = full-retrain samples / samples retrained (or
    the wall-time ratio when sample counts are missing), None when it cannot be computed."""
    speedup: float | None = None
    if samples_retrained and full_retrain_samples:
        speedup = full_retrain_samples / samples_retrained
    elif wall_time_s and full_retrain_wall_time_s_estimate:
        speedup = full_retrain_wall_time_s_estimate / wall_time_s
    return {
        "wall_time_s": wall_time_s,
        "samples_retrained": samples_retrained,
        "shards_retrained": shards_retrained,
        "slices_retrained": slices_retrained,
        "full_retrain_samples": full_retrain_samples,
        "full_retrain_wall_time_s_estimate": full_retrain_wall_time_s_estimate,
        "speedup": speedup,
        "device": device,
    }


def report_cost_section(
    work: ShardWork,
    full_passes: int,
    *,
    wall_time_s: float | None,
    unlearning_wall_time_s: float | None,
    audit_seconds: float,
    device: str,
    plan: Mapping[str, Any],
    exact: bool,
    phases: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit report's cost section: :func:`cost_section` from the measured work, the
    full-retrain estimate at the measured rate, and for exact methods the SISA plan's
    prediction beside what was measured."""
    rate = work.seconds_per_sample_pass
    cost = cost_section(
        wall_time_s=wall_time_s,
        samples_retrained=work.sample_passes,
        full_retrain_samples=full_passes,
        shards_retrained=len(work.retrained_shards),
        slices_retrained=work.slices_retrained,
        full_retrain_wall_time_s_estimate=rate * full_passes if rate is not None else None,
        device=device,
    )
    cost.update(
        {
            "wall_time_from": "request received until its audit report was built",
            "unlearning_wall_time_s": unlearning_wall_time_s,
            "train_seconds": work.train_seconds,
            "seconds_per_sample_pass": rate,
            "audit_seconds": audit_seconds,
            # The request's own phase timings (worker.flows.timings), the audit's included.
            "phases": {**(phases or {}), "audit_s": round(audit_seconds, 4)},
        }
    )
    if exact:
        for key in ("slice_passes", "full_retrain_slice_passes", "predicted_speedup"):
            cost[key] = plan.get(key)
    if plan.get("coalesced_with"):
        cost["shared_with_requests"] = len(plan["coalesced_with"])
    return cost
