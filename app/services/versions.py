"""Model versions: their manifests, constituents and checkpoint keys.

Shared by the API (the first version of a new model) and the worker (a version made by a
deletion). Everything here is bookkeeping; the training itself happens in the worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, insert, literal, select
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    Dataset,
    ManifestEntry,
    Model,
    ModelVersion,
    Sample,
    SampleState,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.sisa.manifest import (
    Placement,
    SampleRef,
    assign,
    chain_key,
    identity_key,
    sample_set_sha256,
)
from app.sisa.manifest import manifest_sha256 as hash_manifest
from app.sisa.planner import DeletionPlan, plan_deletion


def training_identity(model: Model, dataset: Dataset, shard: int, salt: str) -> dict[str, Any]:
    """Everything besides the samples that determines a constituent's weights."""
    recipe = model.recipe
    identity: dict[str, Any] = {
        "architecture": model.architecture,
        "num_classes": len(dataset.classes),
        "channels": dataset.channels,
        "image_size": recipe.image_size,
        "epochs_per_slice": recipe.epochs_per_slice,
        "recipe": recipe.training.identity(),
        "seed": recipe.seed,
        "shard": shard,
        "salt": salt,
    }
    backbone = recipe.backbone_identity()
    if backbone is not None:  # absent for models trained from scratch: their keys stay
        identity["backbone"] = backbone
    return identity


def load_placements(session: Session, version_id: int) -> dict[int, Placement]:
    rows = session.execute(
        select(ManifestEntry.sample_id, ManifestEntry.shard, ManifestEntry.slice).where(
            ManifestEntry.version_id == version_id
        )
    ).all()
    return {sample_id: Placement(shard, slice_) for sample_id, shard, slice_ in rows}


def shard_slice_hashes(
    session: Session, version_id: int, slices: int
) -> dict[int, list[list[str]]]:
    """shard -> per-slice lists of sample content hashes, from the stored manifest."""
    rows = session.execute(
        select(ManifestEntry.shard, ManifestEntry.slice, Sample.sha256)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == version_id)
    ).all()
    table: dict[int, list[list[str]]] = defaultdict(lambda: [[] for _ in range(slices)])
    for shard, slice_, sha in rows:
        table[shard][slice_].append(sha)
    return table


def _manifest_hash(session: Session, version_id: int) -> str:
    rows = session.execute(
        select(Sample.sha256, ManifestEntry.shard, ManifestEntry.slice)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == version_id)
    ).all()
    return hash_manifest({sha: Placement(shard, slice_) for sha, shard, slice_ in rows})


ParentSlots = dict[tuple[int, int], Checkpoint]


def _write_constituents(
    session: Session,
    model: Model,
    version: ModelVersion,
    restart_slices: dict[int, int],
    parent: ParentSlots,
    *,
    approximate: bool = False,
) -> None:
    """Insert one VersionShard per shard and one Checkpoint row per (shard, slice).

    Slots before a shard's restart slice reuse the parent's checkpoint (same key, same bytes);
    later slots continue the parent's key chain with this version's slice contents. The worker
    confirms a reused checkpoint is still in the store before relying on it, and retrains from
    further back when it is not (for instance after a purge).
    """
    config = model.recipe
    shards, slices = config.shards, config.slices
    hashes = shard_slice_hashes(session, version.id, slices)
    for shard in range(shards):
        per_slice = hashes[shard]
        restart = restart_slices.get(shard, slices)
        previous = identity_key(
            training_identity(model, model.dataset, shard, version.checkpoint_salt)
        )
        session.add(
            VersionShard(
                version_id=version.id,
                shard=shard,
                restart_slice=restart,
                status=ShardStatus.DONE if restart >= slices else ShardStatus.PENDING,
            )
        )
        cumulative: list[str] = []
        for slice_ in range(slices):
            cumulative.extend(per_slice[slice_])
            inherited = parent.get((shard, slice_))
            if inherited is not None and (slice_ < restart or approximate):
                # Approximate methods keep the parent's lineage record: their constituents saw
                # exactly what the parent's did, and only the final weights change.
                key, set_hash, count = (
                    inherited.key,
                    inherited.sample_set_sha256,
                    inherited.n_samples,
                )
                artifact = inherited.artifact_sha256
            else:
                key, set_hash, count = (
                    chain_key(previous, per_slice[slice_]),
                    sample_set_sha256(cumulative),
                    len(cumulative),
                )
                artifact = None
            previous = key
            session.add(
                Checkpoint(
                    version_id=version.id,
                    shard=shard,
                    slice=slice_,
                    key=key,
                    sample_set_sha256=set_hash,
                    n_samples=count,
                    reused=slice_ < restart,
                    artifact_sha256=artifact,
                )
            )


def create_initial_version(session: Session, model: Model) -> ModelVersion:
    """Version 1 of a new model: a fresh seeded manifest; every constituent trains from scratch."""
    config = model.recipe
    rows = session.execute(
        select(Sample.id, Sample.sha256, Sample.class_index).where(
            Sample.dataset_id == model.dataset_id,
            Sample.split == "train",
            Sample.state == SampleState.ACTIVE,
        )
    ).all()
    refs = [SampleRef(sample_id, sha, class_index) for sample_id, sha, class_index in rows]
    placement = assign(refs, shards=config.shards, slices=config.slices, seed=config.seed)
    version = ModelVersion(
        model_id=model.id, number=1, reason="initial", method="train", retired_classes=[]
    )
    session.add(version)
    session.flush()
    session.execute(
        insert(ManifestEntry),
        [
            {"version_id": version.id, "sample_id": sid, "shard": p.shard, "slice": p.slice}
            for sid, p in placement.items()
        ],
    )
    version.manifest_sha256 = _manifest_hash(session, version.id)
    _write_constituents(session, model, version, dict.fromkeys(range(config.shards), 0), {})
    return version


def create_child_version(
    session: Session,
    model: Model,
    parent: ModelVersion,
    deleted_sample_ids: Collection[int],
    *,
    method: str,
    full_retrain: bool,
    approximate: bool = False,
    salt: str = "",
    retired_classes: Collection[str] = (),
) -> tuple[ModelVersion, DeletionPlan]:
    """A new version whose manifest is the parent's without the deleted samples.

    Exact methods retrain the planned shards. An approximate method (class forgetting) keeps
    every parent checkpoint and replaces each constituent's final one, so its shards restart
    at the last slice and are marked pending for the unlearning tasks.
    """
    config = model.recipe
    plan = plan_deletion(
        load_placements(session, parent.id),
        deleted_sample_ids,
        shards=config.shards,
        slices=config.slices,
        full_retrain=full_retrain,
    )
    number = (
        session.scalar(
            select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)
        )
        or 0
    ) + 1
    version = ModelVersion(
        model_id=model.id,
        number=number,
        parent_id=parent.id,
        reason="deletion",
        method=method,
        checkpoint_salt=salt,
        retired_classes=sorted(set(parent.retired_classes) | set(retired_classes)),
        status=VersionStatus.TRAINING,
    )
    session.add(version)
    session.flush()
    deleted = set(deleted_sample_ids)
    kept = select(
        literal(version.id), ManifestEntry.sample_id, ManifestEntry.shard, ManifestEntry.slice
    ).where(ManifestEntry.version_id == parent.id)
    if deleted:
        kept = kept.where(ManifestEntry.sample_id.not_in(sorted(deleted)))
    session.execute(
        insert(ManifestEntry).from_select(["version_id", "sample_id", "shard", "slice"], kept)
    )
    version.manifest_sha256 = _manifest_hash(session, version.id)
    parent_slots = {
        (c.shard, c.slice): c
        for c in session.scalars(select(Checkpoint).where(Checkpoint.version_id == parent.id))
    }
    if approximate:
        restart = dict.fromkeys(range(config.shards), config.slices - 1)
    else:
        restart = {p.shard: p.restart_slice for p in plan.affected}
    _write_constituents(session, model, version, restart, parent_slots, approximate=approximate)
    return version, plan
