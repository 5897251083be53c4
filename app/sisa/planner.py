"""Which constituents a deletion touches, and from which slice each must be retrained."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.sisa.manifest import Placement


@dataclass(frozen=True)
class ShardPlan:
    shard: int
    restart_slice: int  # 0-based; the checkpoint after slice restart_slice-1 is the start point
    deleted_samples: int


@dataclass(frozen=True)
class DeletionPlan:
    shards: int
    slices: int
    affected: tuple[ShardPlan, ...]
    full_retrain: bool

    def slice_passes(self) -> int:
        """Slice-trainings this plan costs, counting cumulative slices (slice r trains r+1 units)."""
        if self.full_retrain:
            return self.shards * _passes_from(0, self.slices)
        return sum(_passes_from(p.restart_slice, self.slices) for p in self.affected)

    def full_retrain_passes(self) -> int:
        return self.shards * _passes_from(0, self.slices)

    def predicted_speedup(self) -> float | None:
        cost = self.slice_passes()
        return self.full_retrain_passes() / cost if cost else None

    def to_dict(self) -> dict[str, object]:
        return {
            "shards": self.shards,
            "slices": self.slices,
            "full_retrain": self.full_retrain,
            "affected_shards": [
                {
                    "shard": p.shard,
                    "restart_slice": p.restart_slice,
                    "deleted_samples": p.deleted_samples,
                }
                for p in self.affected
            ],
            "untouched_shards": sorted(set(range(self.shards)) - {p.shard for p in self.affected}),
            "slice_passes": self.slice_passes(),
            "full_retrain_slice_passes": self.full_retrain_passes(),
            "predicted_speedup": self.predicted_speedup(),
        }


def _passes_from(restart_slice: int, slices: int) -> int:
    return sum(r + 1 for r in range(restart_slice, slices))


def plan_deletion(
    placements: Mapping[int, Placement],
    deleted_sample_ids: Iterable[int],
    *,
    shards: int,
    slices: int,
    full_retrain: bool = False,
) -> DeletionPlan:
    """Plan a deletion: each shard holding a deleted sample restarts at its earliest such slice.

    Samples without a placement (held-out test images) cost no retraining.
    """
    earliest: dict[int, int] = {}
    counts: dict[int, int] = {}
    for sample_id in deleted_sample_ids:
        placement = placements.get(sample_id)
        if placement is None:
            continue
        shard = placement.shard
        earliest[shard] = min(earliest.get(shard, slices), placement.slice)
        counts[shard] = counts.get(shard, 0) + 1
    if full_retrain:
        affected = tuple(ShardPlan(s, 0, counts.get(s, 0)) for s in range(shards))
    else:
        affected = tuple(ShardPlan(s, earliest[s], counts[s]) for s in sorted(earliest))
    return DeletionPlan(shards=shards, slices=slices, affected=affected, full_retrain=full_retrain)


def predicted_sisa_speedup(shards: int, slices: int, slice_position: int) -> float:
    """S * R(R+1) / ((R-k+1)(R+k)) for a single deletion in 1-based slice k."""
    r, k = slices, slice_position
    return shards * r * (r + 1) / ((r - k + 1) * (r + k))
