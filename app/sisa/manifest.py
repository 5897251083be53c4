"""Seeded, class-balanced assignment of training samples to SISA shards and slices.

The assignment depends only on the seed and the set of sample hashes, never on database ids or
insertion order, so it can be recomputed and checked by anyone holding the data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleRef:
    sample_id: int
    sha256: str
    class_index: int


@dataclass(frozen=True)
class Placement:
    shard: int
    slice: int


def assign(
    samples: Sequence[SampleRef], *, shards: int, slices: int, seed: int
) -> dict[int, Placement]:
    """Place every sample in one (shard, slice).

    Within each class the samples are shuffled with the seed and dealt round-robin over the
    shards x slices cells, so every constituent sees every class in equal measure and every slice
    holds about 1/R of its shard.
    """
    if shards < 1 or slices < 1:
        raise ValueError("shards and slices must be at least 1")
    by_class: dict[int, list[SampleRef]] = defaultdict(list)
    for sample in samples:
        by_class[sample.class_index].append(sample)
    rng = random.Random(seed)
    cells = [(shard, slice_) for slice_ in range(slices) for shard in range(shards)]
    placement: dict[int, Placement] = {}
    offset = 0
    for class_index in sorted(by_class):
        members = sorted(by_class[class_index], key=lambda s: s.sha256)
        rng.shuffle(members)
        for position, sample in enumerate(members):
            shard, slice_ = cells[(offset + position) % len(cells)]
            placement[sample.sample_id] = Placement(shard, slice_)
        # Carry the deal on across classes so small classes do not all land in cell 0.
        offset += len(members)
    return placement


def sample_set_sha256(sample_hashes: Iterable[str]) -> str:
    """Order-free hash of a set of samples (their content hashes, sorted, newline-joined)."""
    digest = hashlib.sha256()
    for sample_hash in sorted(sample_hashes):
        digest.update(sample_hash.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def manifest_sha256(entries: Mapping[str, Placement]) -> str:
    """Hash of a whole manifest keyed by sample content hash."""
    canonical = sorted((sha, p.shard, p.slice) for sha, p in entries.items())
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def identity_key(identity: Mapping[str, object]) -> str:
    """The root of a constituent's key chain: everything but the samples (recipe, seed, shard)."""
    return hashlib.sha256(
        json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def chain_key(previous: str, slice_sample_hashes: Iterable[str]) -> str:
    """key[r] = sha256(key[r-1] : hash of slice r's samples)."""
    return hashlib.sha256(
        f"{previous}:{sample_set_sha256(slice_sample_hashes)}".encode()
    ).hexdigest()


def checkpoint_keys(
    identity: Mapping[str, object], slice_sample_hashes: Sequence[Iterable[str]]
) -> list[str]:
    """Content keys of one constituent's checkpoints, slice by slice.

    Two checkpoints share a key exactly when they were trained with the same recipe on the same
    samples in the same slice order, which is what makes reuse after a deletion safe.
    """
    keys = []
    previous = identity_key(identity)
    for hashes in slice_sample_hashes:
        previous = chain_key(previous, hashes)
        keys.append(previous)
    return keys
