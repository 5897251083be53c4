"""The lineage proof of exact methods, recomputed from the database.

For every constituent of the new version, the sample set is rebuilt from the stored manifest,
hashed, checked against the constituent's checkpoint records (recorded sample-set hash, size,
content key chain) and intersected with the deleted samples' hashes. Approximate methods get a
section that says they carry no such proof.

Torch-free: manifest rows, checkpoint records and hashes only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Checkpoint, ManifestEntry, Model, ModelVersion, Sample, VersionShard
from app.services.versions import training_identity
from app.sisa.manifest import chain_key, identity_key, sample_set_sha256

__all__ = [
    "HASH_CONVENTION",
    "LineageConstituent",
    "compute_lineage",
    "lineage_section",
]

HASH_CONVENTION = (
    "sample_set_sha256 = sha256 over the constituent's sample content hashes, sorted, each "
    "followed by a newline; checkpoint key[r] = sha256(key[r-1] + ':' + sample_set_sha256(slice "
    "r)), key[-1] = sha256 of the canonical JSON of the training identity (architecture, recipe, "
    "seed, shard, salt)"
)


# --------------------------------------------------------------------------- the section


@dataclass
class LineageConstituent:
    """What one constituent (shard model) of the new version was trained on."""

    shard: int
    sample_set_sha256: str
    n_samples: int
    retrained_from_slice: int | None
    reused_checkpoints: list[str] = field(default_factory=list)
    new_checkpoints: list[str] = field(default_factory=list)
    contains_deleted: list[str] = field(default_factory=list)

    @classmethod
    def from_samples(
        cls,
        shard: int,
        sample_hashes: Iterable[str],
        deleted_hashes: Iterable[str],
        *,
        retrained_from_slice: int | None = None,
        reused_checkpoints: Sequence[str] = (),
        new_checkpoints: Sequence[str] = (),
    ) -> LineageConstituent:
        """Recompute hash, size and the intersection with the deleted set from the manifest's
        sample hashes of this constituent (all slices it was trained on)."""
        samples = {h.lower() for h in sample_hashes}
        deleted = {h.lower() for h in deleted_hashes}
        return cls(
            shard=int(shard),
            sample_set_sha256=sample_set_sha256(samples),
            n_samples=len(samples),
            retrained_from_slice=retrained_from_slice,
            reused_checkpoints=list(reused_checkpoints),
            new_checkpoints=list(new_checkpoints),
            contains_deleted=sorted(samples & deleted),
        )


def lineage_section(
    constituents: list[LineageConstituent],
    deleted_hashes: list[str],
    *,
    exact: bool,
) -> dict:
    """The lineage proof.

    For an exact method, ``verified`` is True only when at least one constituent is listed and
    none contains a deleted hash; ``status`` is "verified" or "failed" and ``violations`` lists
    (shard, hash) pairs that break the proof. Approximate methods get ``exact: False``,
    ``verified: False``, ``status: "not_applicable"`` and a statement that they carry no lineage
    proof.
    """
    deleted = sorted({h.lower() for h in deleted_hashes})
    if not exact:
        return {
            "exact": False,
            "verified": False,
            "status": "not_applicable",
            "statement": (
                "This unlearning method is approximate, carries no lineage proof: the model was "
                "modified after training on the deleted data rather than rebuilt without it. "
                "Its effect is measured in the efficacy and membership-inference sections."
            ),
            "deleted_sample_count": len(deleted),
        }
    cons = sorted(constituents, key=lambda c: c.shard)
    violations = [
        {"shard": c.shard, "sample_sha256": h} for c in cons for h in sorted(c.contains_deleted)
    ]
    verified = bool(cons) and not violations
    retrained = [c for c in cons if c.retrained_from_slice is not None]
    n_reused = sum(len(c.reused_checkpoints) for c in cons)
    n_new = sum(len(c.new_checkpoints) for c in cons)
    if verified:
        statement = (
            f"Verified: the sample sets of all {len(cons)} constituent model(s), recomputed from "
            f"the manifest, contain none of the {len(deleted)} deleted sample hash(es). "
            f"{len(retrained)} shard(s) were retrained from the checkpoint before the first "
            f"affected slice; {n_reused} checkpoint(s) trained without the deleted data were "
            "reused unchanged."
        )
    elif not cons:
        statement = "Failed: no constituent was listed, so nothing proves the lineage."
    else:
        shards = sorted({c.shard for c in cons if c.contains_deleted})
        statement = (
            f"FAILED: {len(violations)} deleted sample hash(es) are still in the training set of "
            f"constituent(s) for shard(s) {', '.join(map(str, shards))}."
        )
    out_constituents = []
    for c in cons:
        d = asdict(c)
        d["contains_deleted"] = sorted(c.contains_deleted)
        out_constituents.append(d)
    return {
        "exact": True,
        "verified": verified,
        "status": "verified" if verified else "failed",
        "statement": statement,
        "deleted_sample_count": len(deleted),
        "constituents": out_constituents,
        "retrained_shards": [c.shard for c in retrained],
        "retrained_from_slice": {str(c.shard): c.retrained_from_slice for c in retrained},
        "n_reused_checkpoints": n_reused,
        "n_new_checkpoints": n_new,
        "violations": violations,
    }


# --------------------------------------------------------------------------- recomputation


def _slice_hashes(session: Session, version_id: int, slices: int) -> dict[int, list[list[str]]]:
    """shard -> per-slice sample content hashes, read from the stored manifest rows."""
    table: dict[int, list[list[str]]] = defaultdict(lambda: [[] for _ in range(slices)])
    for shard, slice_, sha in session.execute(
        select(ManifestEntry.shard, ManifestEntry.slice, Sample.sha256)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == version_id)
    ).all():
        table[shard][slice_].append(sha.lower())
    return table


def _lineage_salts(session: Session, version: ModelVersion) -> list[str]:
    """Checkpoint salts of the version and its ancestors: a reused first checkpoint may come
    from an ancestor whose key chain started from another salt (a forced full retrain)."""
    salts: list[str] = []
    current: ModelVersion | None = version
    seen: set[int] = set()
    while current is not None and current.id not in seen:
        seen.add(current.id)
        if current.checkpoint_salt not in salts:
            salts.append(current.checkpoint_salt)
        current = session.get(ModelVersion, current.parent_id) if current.parent_id else None
    return salts


@dataclass
class _ShardCheck:
    constituent: LineageConstituent
    problems: list[dict[str, Any]]


def _check_shard(
    shard: int,
    per_slice: list[list[str]],
    slots: dict[tuple[int, int], Checkpoint],
    roots: set[str],
    restart: int | None,
    deleted: set[str],
) -> _ShardCheck:
    """Recompute one constituent's sample sets and key chain from its manifest slices and compare
    them with its checkpoint records, slot by slot."""
    cumulative: list[str] = []
    previous: str | None = None
    reused: list[str] = []
    new: list[str] = []
    problems: list[dict[str, Any]] = []
    for slice_, hashes in enumerate(per_slice):
        cumulative.extend(hashes)
        slot = slots.get((shard, slice_))
        if slot is None:
            problems.append({"shard": shard, "slice": slice_, "problem": "no checkpoint record"})
            previous = None
            continue
        expected_set = sample_set_sha256(cumulative)
        if slot.sample_set_sha256 != expected_set or slot.n_samples != len(cumulative):
            problems.append(
                {
                    "shard": shard,
                    "slice": slice_,
                    "problem": "the checkpoint's recorded sample set differs from the manifest",
                    "recorded_sample_set_sha256": slot.sample_set_sha256,
                    "manifest_sample_set_sha256": expected_set,
                }
            )
        if slice_ == 0:
            expected_keys = {chain_key(root, hashes) for root in roots}
        else:  # a missing record before this slot leaves nothing to chain from
            expected_keys = {chain_key(previous, hashes)} if previous is not None else set()
        if slot.key not in expected_keys:
            problems.append(
                {
                    "shard": shard,
                    "slice": slice_,
                    "problem": "the checkpoint key does not follow from the manifest's slices",
                    "checkpoint_key": slot.key,
                }
            )
        previous = slot.key
        (reused if slot.reused else new).append(slot.key)
    constituent = LineageConstituent(
        shard=shard,
        sample_set_sha256=sample_set_sha256(cumulative),
        n_samples=len(cumulative),
        retrained_from_slice=restart,
        reused_checkpoints=reused,
        new_checkpoints=new,
        contains_deleted=sorted(set(cumulative) & deleted),
    )
    return _ShardCheck(constituent, problems)


def compute_lineage(
    session: Session, version: ModelVersion, deleted_hashes: Sequence[str], *, exact: bool
) -> dict[str, Any]:
    """The lineage section for ``version``, recomputed now from the database.

    For every constituent the sample set is rebuilt from the version's stored manifest rows
    (joined with the samples' content hashes), hashed, checked against every checkpoint record
    of the constituent (recorded sample-set hash, size and content key chain) and intersected
    with ``deleted_hashes``. Any deleted hash inside a constituent, or any record that does not
    follow from the manifest, makes ``verified`` False and is listed in ``violations``.
    Approximate methods get the plain "no lineage proof" section.
    """
    model = session.get(Model, version.model_id)
    assert model is not None
    if not exact:
        return _with_backbone(lineage_section([], list(deleted_hashes), exact=False), model)
    shards, slices = model.recipe.shards, model.recipe.slices
    per_shard = _slice_hashes(session, version.id, slices)
    slots = {
        (c.shard, c.slice): c
        for c in session.scalars(select(Checkpoint).where(Checkpoint.version_id == version.id))
    }
    restarts = {
        s.shard: s.restart_slice
        for s in session.scalars(select(VersionShard).where(VersionShard.version_id == version.id))
    }
    salts = _lineage_salts(session, version)
    deleted = {h.lower() for h in deleted_hashes}
    checks = []
    for shard in range(shards):
        roots = {
            identity_key(training_identity(model, model.dataset, shard, salt)) for salt in salts
        }
        restart = restarts.get(shard, slices)
        checks.append(
            _check_shard(
                shard,
                per_shard[shard],
                slots,
                roots,
                restart if restart < slices else None,
                deleted,
            )
        )
    section = lineage_section([c.constituent for c in checks], sorted(deleted), exact=True)
    section = _add_record_checks(section, [p for c in checks for p in c.problems])
    return _with_backbone(section, model)


def _with_backbone(section: dict[str, Any], model: Model) -> dict[str, Any]:
    """Name the fixed backbone of a heads model, and what the proof does and does not cover."""
    recipe = model.recipe
    spec = recipe.backbone
    if spec is None:
        return section
    section["backbone"] = {
        "name": spec.name,
        "architecture": spec.architecture,
        "sha256": spec.sha256,
        "trained_on": spec.trained_on,
        "head": recipe.head,
        "tune": recipe.tune,
        "statement": (
            f"Each constituent is a {recipe.head} head"
            + (
                " with its own copy of the backbone's last stage"
                if recipe.tune == "last_block"
                else ""
            )
            + f" on the fixed backbone {spec.name!r} (sha256 {spec.sha256}), trained on: "
            f"{spec.trained_on}. The backbone is fixed: it was not trained on this dataset and "
            "no deletion changes it. Its hash is part of every checkpoint's content key, so "
            "the proof above, which covers everything trained on the dataset (the heads), "
            "holds for these exact backbone weights."
        ),
    }
    return section


def _add_record_checks(section: dict[str, Any], problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the checkpoint-record comparison into the builder's section."""
    no_deleted = not section.get("violations")
    section["checks"] = {
        "no_deleted_sample_in_any_constituent": no_deleted,
        "checkpoint_records_match_manifest": not problems,
    }
    section["hash_convention"] = HASH_CONVENTION
    if problems:
        section["verified"] = False
        section["status"] = "failed"
        section["violations"] = [*(section.get("violations") or []), *problems]
        prefix = "" if no_deleted else section["statement"] + " "
        section["statement"] = (
            f"{prefix}FAILED: {len(problems)} checkpoint record(s) do not follow from the stored "
            "manifest, so the manifest does not prove what those constituents were trained on."
        )
    return section
