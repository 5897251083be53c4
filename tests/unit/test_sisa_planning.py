"""The pure SISA bookkeeping: manifest assignment, key chains and deletion plans."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from app.sisa.manifest import (
    Placement,
    SampleRef,
    assign,
    chain_key,
    checkpoint_keys,
    identity_key,
    manifest_sha256,
    sample_set_sha256,
)
from app.sisa.planner import plan_deletion, predicted_sisa_speedup


def _samples(n_per_class: int, classes: int) -> list[SampleRef]:
    return [
        SampleRef(i, hashlib.sha256(str(i).encode()).hexdigest(), i % classes)
        for i in range(n_per_class * classes)
    ]


def test_assignment_is_seeded_complete_and_class_balanced() -> None:
    samples = _samples(40, 5)
    first = assign(samples, shards=4, slices=5, seed=11)
    assert first == assign(list(reversed(samples)), shards=4, slices=5, seed=11)
    assert first != assign(samples, shards=4, slices=5, seed=12)
    assert set(first) == {s.sample_id for s in samples}
    cells = Counter((p.shard, p.slice) for p in first.values())
    assert len(cells) == 20 and max(cells.values()) - min(cells.values()) <= 1
    for class_index in range(5):
        per_shard = Counter(
            first[s.sample_id].shard for s in samples if s.class_index == class_index
        )
        assert max(per_shard.values()) - min(per_shard.values()) <= 1


def test_assignment_refuses_empty_layouts() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        assign(_samples(2, 2), shards=0, slices=1, seed=0)


def test_sample_set_hash_ignores_order_but_not_content() -> None:
    assert sample_set_sha256(["b", "a"]) == sample_set_sha256(["a", "b"])
    assert sample_set_sha256(["a"]) != sample_set_sha256(["a", "b"])


def test_manifest_hash_changes_when_a_sample_moves() -> None:
    entries = {"a": Placement(0, 0), "b": Placement(1, 0)}
    moved = {"a": Placement(0, 1), "b": Placement(1, 0)}
    assert manifest_sha256(entries) != manifest_sha256(moved)


def test_key_chain_depends_on_slice_order_and_identity() -> None:
    identity = {"architecture": "small_cnn", "seed": 1, "shard": 0}
    keys = checkpoint_keys(identity, [["a", "b"], ["c"]])
    # The same union split differently over slices is a different training run.
    assert keys[-1] != checkpoint_keys(identity, [["a"], ["b", "c"]])[-1]
    assert keys[0] == checkpoint_keys(identity, [["b", "a"], ["d"]])[0]
    assert keys != checkpoint_keys({**identity, "seed": 2}, [["a", "b"], ["c"]])
    assert keys[1] == chain_key(chain_key(identity_key(identity), ["a", "b"]), ["c"])


def test_plan_restarts_each_shard_at_its_earliest_deleted_slice() -> None:
    placements = {1: Placement(0, 2), 2: Placement(0, 1), 3: Placement(2, 3), 4: Placement(1, 0)}
    plan = plan_deletion(placements, [1, 2, 3, 99], shards=3, slices=4)
    assert [(p.shard, p.restart_slice, p.deleted_samples) for p in plan.affected] == [
        (0, 1, 2),
        (2, 3, 1),
    ]
    body = plan.to_dict()
    assert body["untouched_shards"] == [1]
    # Slices 1..3 of shard 0 cost 2+3+4 units, slice 3 of shard 2 costs 4.
    assert plan.slice_passes() == 13
    assert plan.full_retrain_passes() == 3 * 10


def test_full_retrain_plan_touches_every_shard_from_the_start() -> None:
    plan = plan_deletion({1: Placement(1, 2)}, [1], shards=3, slices=2, full_retrain=True)
    assert [p.restart_slice for p in plan.affected] == [0, 0, 0]
    assert plan.predicted_speedup() == 1.0


def test_predicted_speedup_matches_the_closed_form() -> None:
    shards, slices = 5, 4
    for k in range(1, slices + 1):
        plan = plan_deletion({7: Placement(0, k - 1)}, [7], shards=shards, slices=slices)
        assert plan.predicted_speedup() == pytest.approx(predicted_sisa_speedup(shards, slices, k))
    # Average cost over positions gives S * 3R / (2R + 1).
    mean_cost = (
        sum(
            plan_deletion({7: Placement(0, k)}, [7], shards=shards, slices=slices).slice_passes()
            for k in range(slices)
        )
        / slices
    )
    assert shards * 10 / mean_cost == pytest.approx(shards * 3 * slices / (2 * slices + 1))


def test_deleting_only_held_out_samples_costs_nothing() -> None:
    plan = plan_deletion({}, [5], shards=2, slices=2)
    assert plan.affected == () and plan.predicted_speedup() is None
