"""The audit step of a deletion: measure, build, sign, chain and store the request's report.

:func:`publish_report` runs inside ``complete_batch`` once per request, after the new version is
ready and before the forgotten files are erased and the superseded checkpoints purged, so the
parent version's constituents and the forgotten images can still be measured. It

1. recomputes the lineage proof from the stored manifest and checkpoint records (exact methods);
2. measures efficacy and membership inference on the parent (before) and the new version
   (after), on samples of bounded size so the audit stays a small fraction of the deletion;
3. builds the body (:mod:`worker.audit.builder`), seals it into the deployment's hash chain with
   the Ed25519 signing key, renders the HTML page and inserts the ``AuditReport`` row in the
   caller's transaction, so the report and the request's completion commit together.

Privacy: the report and the logs name samples by content hash and counts only. File paths are
read here solely to decode images; they never reach the report, an exception text in it, or a
log line.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.audit.integrity import SigningKey, seal_report, verify_envelope
from app.db.models import (
    AuditReport,
    Checkpoint,
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    Sample,
    SampleState,
    VersionShard,
)
from app.services.keys import signing_key
from app.services.versions import training_identity
from app.settings import get_settings
from app.sisa.manifest import chain_key, identity_key, sample_set_sha256
from worker.audit import mia
from worker.audit.builder import (
    LineageConstituent,
    build_plots,
    build_report_body,
    cost_section,
    lineage_section,
    mia_section,
    prediction_distribution,
)
from worker.audit.html import render_report_html
from worker.constituents import CHECKPOINTS, final_checkpoints, fresh_constituent
from worker.flows.common import device, log, store
from worker.samples import SampleRow, load_tensors, sample_rows
from worker.training.data import load_images
from worker.training.evaluate import aggregate, predict_proba
from worker.training.trainer import load_checkpoint
from worker.unlearning.registry import get_method

__all__ = [
    "MAX_MEMBERS",
    "MAX_NONMEMBERS",
    "MAX_RETAIN",
    "compute_lineage",
    "publish_report",
]

# Sample caps: the attacks' power is bounded by the forgotten set anyway, and every image costs
# one forward pass per constituent of two versions, which must stay small next to the retrain.
MAX_MEMBERS = 500
MAX_NONMEMBERS = 300
MAX_RETAIN = 100
# Bootstrap resamples behind every attack's 95 % intervals.
N_BOOTSTRAP = 200
# Key of the PostgreSQL advisory lock that serialises appends to the deployment's report chain.
CHAIN_LOCK_ID = 0x666F7267  # "forg"

HASH_CONVENTION = (
    "sample_set_sha256 = sha256 over the constituent's sample content hashes, sorted, each "
    "followed by a newline; checkpoint key[r] = sha256(key[r-1] + ':' + sample_set_sha256(slice "
    "r)), key[-1] = sha256 of the canonical JSON of the training identity (architecture, recipe, "
    "seed, shard, salt)"
)
GOOD_VALUES = (
    "ROC AUC near 0.5 (chance), advantage near 0 and TPR at 1% FPR near 0.01 mean the attacker "
    "cannot tell the forgotten samples from never-seen test samples; the reference is what a "
    "model retrained without the data gives."
)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class _Target:
    sample_id: int
    sha256: str
    class_index: int
    split: str


@dataclass
class _Context:
    """Everything about the request that the sections need, read once."""

    request: DeletionRequest
    version: ModelVersion
    parent: ModelVersion
    model: Model
    classes: list[str]
    exact: bool
    targets: list[_Target]
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def is_class_target(self) -> bool:
        return self.request.target_kind == "classes"

    @property
    def slices(self) -> int:
        return int(self.model.config["slices"])

    @property
    def shards(self) -> int:
        return int(self.model.config["shards"])

    def target_hashes(self) -> list[str]:
        return sorted({t.sha256.lower() for t in self.targets})


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the service stores UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _seed(target_hashes: Sequence[str]) -> int:
    """A stable 31-bit seed from what is forgotten (not from ids): the same request on the same
    data samples the same subsets and draws the same attack folds in any deployment, so its
    report can be compared with a retrain's number for number."""
    digest = hashlib.sha256("\n".join(sorted(target_hashes)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def _load_context(session: Session, request: DeletionRequest, version: ModelVersion) -> _Context:
    model = session.get(Model, version.model_id)
    assert model is not None
    parent_id = version.parent_id or request.base_version_id
    parent = session.get(ModelVersion, parent_id) if parent_id is not None else None
    if parent is None:
        raise ValueError(f"version {version.id} has no parent version to audit against")
    targets = [
        _Target(sid, sha, cls, split)
        for sid, sha, cls, split in session.execute(
            select(Sample.id, Sample.sha256, Sample.class_index, Sample.split)
            .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
            .where(DeletionTarget.request_id == request.id)
            .order_by(Sample.sha256, Sample.id)
        ).all()
    ]
    return _Context(
        request=request,
        version=version,
        parent=parent,
        model=model,
        classes=list(model.dataset.classes),
        exact=bool(get_method(version.method).exact),
        targets=targets,
        seed=_seed([t.sha256.lower() for t in targets]),
    )


# --------------------------------------------------------------------------- request, method


def _request_section(ctx: _Context) -> dict[str, Any]:
    request, classes = ctx.request, ctx.classes
    counts = Counter(classes[t.class_index] for t in ctx.targets)
    names = list(request.target_classes or [])
    return {
        "id": request.id,
        "external_id": request.external_id,
        "model_id": ctx.model.id,
        "model_name": ctx.model.name,
        "created_at": _aware(request.created_at),
        "started_at": _aware(ctx.version.started_at),
        "completed_at": _aware(ctx.version.completed_at),
        "target": {
            "kind": "class" if ctx.is_class_target else "samples",
            "sample_sha256": ctx.target_hashes(),
            "n_samples": len(ctx.targets),
            "counts_by_class": {c: counts[c] for c in classes if counts[c]},
            "class_names": names or None,
            "class_indices": [classes.index(c) for c in names] or None,
        },
        "coalesced_with": list(request.plan.get("coalesced_with") or []),
    }


def _method_section(ctx: _Context) -> dict[str, Any]:
    spec = get_method(ctx.version.method)
    return {
        "name": spec.name,
        "exact": bool(spec.exact),
        "description": spec.summary,
        "parameters": dict(ctx.request.method_config or {}),
        "paper": spec.paper,
    }


def _version_ref(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": version.id,
        "number": version.number,
        "manifest_sha256": version.manifest_sha256,
        "created_at": _aware(version.completed_at or version.started_at),
        "method": version.method,
    }


def _versions_section(ctx: _Context) -> dict[str, Any]:
    return {
        "model_id": ctx.model.id,
        "architecture": ctx.model.architecture,
        "before": _version_ref(ctx.parent),
        "after": _version_ref(ctx.version),
        "shards": ctx.shards,
        "slices": ctx.slices,
        "aggregation": ctx.model.config.get("aggregation"),
    }


# --------------------------------------------------------------------------- lineage


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
    if not exact:
        return lineage_section([], list(deleted_hashes), exact=False)
    model = session.get(Model, version.model_id)
    assert model is not None
    shards, slices = int(model.config["shards"]), int(model.config["slices"])
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
    return _add_record_checks(section, [p for c in checks for p in c.problems])


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


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class _EvalSets:
    """The images the audit scores, concatenated: members, non-members, retained samples."""

    images: torch.Tensor
    labels: np.ndarray
    member_shards: np.ndarray  # the parent constituent that trained each member
    sizes: dict[str, int]

    def part(self, name: str) -> slice:
        start = 0
        for key in ("forget", "test", "retain"):
            if key == name:
                return slice(start, start + self.sizes[key])
            start += self.sizes[key]
        raise KeyError(name)


def _subsample(items: Sequence[Any], limit: int, rng: np.random.Generator) -> list[Any]:
    if len(items) <= limit:
        return list(items)
    chosen = np.sort(rng.choice(len(items), size=limit, replace=False))
    return [items[i] for i in chosen]


def _members(session: Session, ctx: _Context, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(sample id, parent shard) of the forgotten samples the parent actually trained on."""
    ids = [t.sample_id for t in ctx.targets if t.split == "train"]
    placed: dict[int, int] = {}
    for start in range(0, len(ids), 5000):  # stays under SQLite's bound-parameter limit
        chunk = ids[start : start + 5000]
        placed.update(
            session.execute(
                select(ManifestEntry.sample_id, ManifestEntry.shard).where(
                    ManifestEntry.version_id == ctx.parent.id,
                    ManifestEntry.sample_id.in_(chunk),
                )
            ).all()
        )
    members = [(sid, placed[sid]) for sid in ids if sid in placed]
    if len(members) > MAX_MEMBERS:
        ctx.notes.append(
            f"Membership inference and forget-set accuracy use {MAX_MEMBERS} of the "
            f"{len(members)} forgotten training samples, drawn at random (seeded by the request)."
        )
    return _subsample(members, MAX_MEMBERS, rng)


def _nonmembers(
    session: Session, ctx: _Context, classes: set[int], rng: np.random.Generator
) -> tuple[list[int], torch.Tensor]:
    """Active held-out test samples of the members' classes (never trained on by any version)
    and their images.

    The whole active test set is read in the order the version's evaluation just read it, so
    its decoded copy comes from the on-disk cache instead of being decoded again.
    """
    ids = list(
        session.scalars(
            select(Sample.id)
            .where(
                Sample.dataset_id == ctx.model.dataset_id,
                Sample.split == "test",
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.sha256)
        ).all()
    )
    rows = sample_rows(session, ids)
    wanted = [i for i, r in enumerate(rows) if r.class_index in classes]
    chosen = _subsample(wanted, MAX_NONMEMBERS, rng)
    if not chosen:
        return [], _load_rows(ctx, [], cache=False)
    images = _load_rows(ctx, rows, cache=True)
    return [ids[i] for i in chosen], images[torch.tensor(chosen, dtype=torch.long)]


def _retained(session: Session, ctx: _Context, rng: np.random.Generator) -> list[int]:
    """A random sample of the training data the new version kept."""
    ids = session.scalars(
        select(ManifestEntry.sample_id)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == ctx.version.id)
        .order_by(Sample.sha256, Sample.id)
    ).all()
    return _subsample(list(ids), MAX_RETAIN, rng)


def _load_rows(ctx: _Context, rows: list[SampleRow], *, cache: bool) -> torch.Tensor:
    dataset, size = ctx.model.dataset, int(ctx.model.config["image_size"])
    if cache:
        images, _ = load_tensors(get_settings(), dataset, rows, size)
        return images
    # Forgotten images are decoded without the on-disk cache: no decoded copy of them is left.
    root = Path(dataset.root)
    if not rows:
        return torch.zeros((0, dataset.channels, size, size), dtype=torch.uint8)
    return load_images(
        [root / r.rel_path for r in rows], image_size=size, channels=dataset.channels
    )


def _eval_sets(session: Session, ctx: _Context) -> _EvalSets:
    rng = np.random.default_rng(ctx.seed)
    members = _members(session, ctx, rng)
    member_rows = sample_rows(session, [sid for sid, _ in members])
    if ctx.is_class_target:
        member_classes = {ctx.classes.index(c) for c in ctx.request.target_classes}
    else:
        member_classes = {r.class_index for r in member_rows}
    test_ids, test_images = _nonmembers(session, ctx, member_classes, rng)
    test_rows = sample_rows(session, test_ids)
    retain_rows = sample_rows(session, _retained(session, ctx, rng))
    images = torch.cat(
        [
            _load_rows(ctx, member_rows, cache=False),
            test_images,
            _load_rows(ctx, retain_rows, cache=True),
        ]
    )
    labels = np.array(
        [r.class_index for r in (*member_rows, *test_rows, *retain_rows)], dtype=np.int64
    )
    return _EvalSets(
        images=images,
        labels=labels,
        member_shards=np.array([shard for _, shard in members], dtype=np.int64),
        sizes={"forget": len(member_rows), "test": len(test_rows), "retain": len(retain_rows)},
    )


# --------------------------------------------------------------------------- predictions


def _predict_version(
    session: Session,
    ctx: _Context,
    version: ModelVersion,
    images: torch.Tensor,
    known: dict[str, np.ndarray],
) -> list[np.ndarray]:
    """Per-constituent softmax [N, K] of ``version`` in shard order.

    ``known`` maps checkpoint keys to predictions already made: a constituent that the new
    version reused unchanged from its parent is not run twice.
    """
    dev = device(get_settings())
    out: list[np.ndarray] = []
    for checkpoint in final_checkpoints(session, version, ctx.slices):
        cached = known.get(checkpoint.key) if checkpoint.reused else None
        if cached is None:
            net = fresh_constituent(ctx.model, checkpoint.shard)
            load_checkpoint(store().get(CHECKPOINTS, checkpoint.key), net, None, "cpu")
            # channels_last makes these small convolutions about 1.6x faster on CPU.
            net = net.to(dev).to(memory_format=torch.channels_last)
            cached = predict_proba(net, images, device=dev).numpy().astype(np.float64)
            del net
        known[checkpoint.key] = cached
        out.append(cached)
    return out


@dataclass
class _Stage:
    """One version's view of the evaluation sets."""

    per_shard: list[np.ndarray]  # constituent softmax [N, K]
    mean: np.ndarray  # mean softmax, what the attacks read
    predicted: np.ndarray  # class predicted with the model's own aggregation

    @classmethod
    def of(cls, per_shard: list[np.ndarray], aggregation: str) -> _Stage:
        mean = np.mean(np.stack(per_shard), axis=0)
        scores = aggregate([torch.from_numpy(p) for p in per_shard], aggregation)  # type: ignore[arg-type]
        return cls(per_shard=per_shard, mean=mean, predicted=scores.argmax(1).numpy())


def _losses(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return mia.features_from_proba(proba, labels)[:, 0]


def _accuracy(stage: _Stage | None, labels: np.ndarray, part: slice) -> float | None:
    if stage is None:
        return None
    pred = stage.predicted[part]
    return float(np.mean(pred == labels[part])) if pred.size else None


# --------------------------------------------------------------------------- membership inference


def _attacks(
    stage: _Stage, sets: _EvalSets, seed: int, notes: list[str], label: str
) -> dict[str, mia.AttackResult]:
    forget, test = sets.part("forget"), sets.part("test")
    features = mia.features_from_proba(stage.mean, sets.labels)
    fm, fn = features[forget], features[test]
    options: dict[str, Any] = {"n_bootstrap": N_BOOTSTRAP, "seed": seed}
    results: dict[str, mia.AttackResult] = {}
    runs = (
        ("loss_threshold", lambda: mia.loss_threshold_attack(fm[:, 0], fn[:, 0], **options)),
        ("logistic_regression", lambda: mia.logistic_regression_attack(fm, fn, **options)),
    )
    for name, run in runs:
        try:
            results[name] = run()
        except ValueError as exc:  # too few samples for this attack
            notes.append(f"The {name} attack was not run {label}: {exc}.")
    return results


def _reference_test(
    before: _Stage | None, after: _Stage, sets: _EvalSets, ctx: _Context
) -> dict[str, Any] | None:
    """SISA's free reference models: for each forgotten sample, the parent's constituents of the
    other shards never saw it. Compares its loss under its own shard's constituent, before and
    after, with its losses under those reference models."""
    n = sets.sizes["forget"]
    if before is None or ctx.shards < 2 or n == 0 or ctx.is_class_target:
        return None
    forget = sets.part("forget")
    labels = sets.labels[forget]
    losses_before = np.stack([_losses(p[forget], labels) for p in before.per_shard], axis=1)
    losses_after = np.stack([_losses(p[forget], labels) for p in after.per_shard], axis=1)
    own = sets.member_shards
    rows = np.arange(n)
    others = np.array([[j for j in range(ctx.shards) if j != s] for s in own], dtype=np.int64)
    out_losses = losses_before[rows[:, None], others]
    result = mia.reference_model_test(losses_after[rows, own], out_losses)
    prior = mia.reference_model_test(losses_before[rows, own], out_losses)
    result["stage"] = "after"
    result["reference_models"] = (
        "the parent version's constituents of the other shards, which never trained on the sample"
    )
    result["before"] = {
        k: prior[k]
        for k in ("fraction_flagged", "mean_percentile", "median_percentile", "mean_z", "status")
    }
    return result


def _mia(before: _Stage | None, after: _Stage, sets: _EvalSets, ctx: _Context) -> dict[str, Any]:
    notes = ctx.notes
    if sets.sizes["forget"] == 0 or sets.sizes["test"] == 0:
        notes.append(
            "No membership inference: the request names no sample the previous version trained "
            "on, or no held-out test sample of the same classes is left."
        )
        return mia_section({}, {}, None, None)
    b = _attacks(before, sets, ctx.seed, notes, "before unlearning") if before else {}
    a = _attacks(after, sets, ctx.seed, notes, "after unlearning")
    section = mia_section(
        b,
        a,
        _reference_test(before, after, sets, ctx),
        None,
        members=f"{sets.sizes['forget']} forgotten training sample(s)",
        nonmembers=f"{sets.sizes['test']} held-out test sample(s) of the same class(es)",
    )
    section["good_values"] = GOOD_VALUES
    section["attacks_described"] = {
        "loss_threshold": "threshold on the per-sample cross-entropy loss (low loss = member)",
        "logistic_regression": "logistic regression on loss, max confidence, entropy and "
        "true-class confidence, scored out-of-fold (5-fold)",
    }
    section["model_output"] = "mean softmax of the constituents"
    return section


# --------------------------------------------------------------------------- efficacy


def _metric(version: ModelVersion, *path: str) -> Any:
    value: Any = version.metrics or {}
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _test_class_counts(session: Session, ctx: _Context) -> dict[int, int]:
    return dict(
        session.execute(  # type: ignore[arg-type]
            select(Sample.class_index, func.count())
            .where(
                Sample.dataset_id == ctx.model.dataset_id,
                Sample.split == "test",
                Sample.state == SampleState.ACTIVE,
            )
            .group_by(Sample.class_index)
        ).all()
    )


def _weighted(per_class: dict[str, Any] | None, counts: dict[str, int]) -> float | None:
    if not per_class:
        return None
    pairs = [(float(a), n) for c, n in counts.items() if (a := per_class.get(c)) is not None]
    total = sum(n for _, n in pairs)
    return sum(a * n for a, n in pairs) / total if total else None


def _efficacy(
    session: Session, before: _Stage | None, after: _Stage, sets: _EvalSets, ctx: _Context
) -> dict[str, Any]:
    labels = sets.labels
    forget, retain, test = sets.part("forget"), sets.part("retain"), sets.part("test")
    parent, version = ctx.parent, ctx.version
    before_pc = _metric(parent, "test", "per_class") or {}
    after_pc = _metric(version, "test", "per_class") or {}
    efficacy: dict[str, Any] = {
        "forget": {
            "before": _accuracy(before, labels, forget),
            "after": _accuracy(after, labels, forget),
            "n": sets.sizes["forget"],
        },
        "retain": {
            "before": _accuracy(before, labels, retain),
            "after": _accuracy(after, labels, retain),
            "n": sets.sizes["retain"],
        },
        "test": {
            "before": _metric(parent, "test", "accuracy"),
            "after": _metric(version, "test", "accuracy"),
            "n": _metric(version, "test", "count"),
        },
        "per_class": {
            c: {"before": before_pc.get(c), "after": after_pc.get(c)} for c in ctx.classes
        },
    }
    # Where the forgotten samples' predictions go; for a class, its test images count too.
    pool = np.r_[forget, test] if ctx.is_class_target else np.arange(forget.start, forget.stop)
    if pool.size:
        efficacy["forget_prediction_distribution"] = {
            stage: prediction_distribution(s.predicted[pool], ctx.classes)
            for stage, s in (("before", before), ("after", after))
            if s is not None
        }
    if ctx.is_class_target:
        counts = _test_class_counts(session, ctx)
        kept = {
            ctx.classes[i]: n
            for i, n in counts.items()
            if ctx.classes[i] not in set(ctx.request.target_classes)
        }
        efficacy["test_retained_classes"] = {
            "before": _weighted(before_pc, kept),
            "after": _weighted(after_pc, kept),
            "n": sum(kept.values()),
        }
    efficacy.update(_forgetting_fields(_metric(version, "forgetting")))
    _note_test_set_change(parent, version, ctx.notes)
    return efficacy


def _forgetting_fields(forgetting: Any) -> dict[str, Any]:
    """The version's own forgetting metrics (computed when it was finalised): the fields the
    schema names are lifted into place, the whole record is kept beside them."""
    if not isinstance(forgetting, dict):
        return {}
    fields: dict[str, Any] = {"forgetting_metrics": forgetting}
    for key in ("weight_distance", "retrain_comparison", "method_metrics"):
        if isinstance(forgetting.get(key), dict):
            fields[key] = forgetting[key]
    relearn = forgetting.get("relearn_epochs")
    if isinstance(relearn, int | float) and not isinstance(relearn, bool):
        fields["relearn_epochs"] = float(relearn)
    return fields


def _note_test_set_change(parent: ModelVersion, version: ModelVersion, notes: list[str]) -> None:
    before_n, after_n = _metric(parent, "test", "count"), _metric(version, "test", "count")
    if before_n is not None and after_n is not None and before_n != after_n:
        notes.append(
            f"Test accuracy before is the previous version's own evaluation on {before_n} test "
            f"samples; after is measured on the {after_n} test samples active now."
        )


def _loss_histograms(before: _Stage | None, after: _Stage, sets: _EvalSets) -> dict[str, Any]:
    return {
        stage: {
            name: _losses(s.mean[sets.part(name)], sets.labels[sets.part(name)])
            for name in ("forget", "retain", "test")
        }
        for stage, s in (("before", before), ("after", after))
        if s is not None
    }


@dataclass
class _Evidence:
    efficacy: dict[str, Any] = field(default_factory=dict)
    mia: dict[str, Any] = field(default_factory=lambda: mia_section({}, {}, None, None))
    losses: dict[str, Any] | None = None


def _measure(session: Session, ctx: _Context) -> _Evidence:
    """Efficacy and membership inference; a failure is reported in the notes, not raised, so a
    missing image or checkpoint cannot stop the deletion from completing with its proof."""
    try:
        sets = _eval_sets(session, ctx)
        known: dict[str, np.ndarray] = {}
        how = str(ctx.model.config.get("aggregation", "mean_softmax"))
        before = _before_stage(session, ctx, sets, known, how)
        after = _Stage.of(_predict_version(session, ctx, ctx.version, sets.images, known), how)
        return _Evidence(
            efficacy=_efficacy(session, before, after, sets, ctx),
            mia=_mia(before, after, sets, ctx),
            losses=_loss_histograms(before, after, sets),
        )
    except Exception as exc:  # the type only: messages can carry file paths
        log.error("audit of request %s: could not score samples (%s)", ctx.request.id, _kind(exc))
        ctx.notes.append(f"Efficacy and membership inference could not be measured ({_kind(exc)}).")
        return _Evidence()


def _before_stage(
    session: Session, ctx: _Context, sets: _EvalSets, known: dict[str, np.ndarray], how: str
) -> _Stage | None:
    """The previous version on the evaluation sets; None (and a note) when its weights are gone,
    so the report still measures the new version."""
    try:
        return _Stage.of(_predict_version(session, ctx, ctx.parent, sets.images, known), how)
    except Exception as exc:  # the type only: messages can carry file paths
        log.error(
            "audit of request %s: previous version not scored (%s)", ctx.request.id, _kind(exc)
        )
        ctx.notes.append(
            f"The previous version's weights could not be loaded ({_kind(exc)}): every 'before' "
            "figure and the reference-model test are missing."
        )
        return None


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


# --------------------------------------------------------------------------- cost


def _full_retrain_passes(session: Session, ctx: _Context) -> int:
    """Sample passes of training every constituent from scratch on the new manifest (slice r
    trains on slices 0..r, ``epochs_per_slice`` times)."""
    sizes: dict[int, list[int]] = defaultdict(lambda: [0] * ctx.slices)
    for shard, slice_, n in session.execute(
        select(ManifestEntry.shard, ManifestEntry.slice, func.count())
        .where(ManifestEntry.version_id == ctx.version.id)
        .group_by(ManifestEntry.shard, ManifestEntry.slice)
    ).all():
        sizes[shard][slice_] = int(n)
    epochs = int(ctx.model.config["epochs_per_slice"])
    total = 0
    for per_slice in sizes.values():
        total += sum(sum(per_slice[: r + 1]) for r in range(ctx.slices))
    return total * epochs


def _cost(session: Session, ctx: _Context, audit_seconds: float) -> dict[str, Any]:
    shards = session.scalars(
        select(VersionShard).where(VersionShard.version_id == ctx.version.id)
    ).all()
    trained = sum(s.samples_trained for s in shards)
    seconds = sum(s.train_seconds for s in shards)
    retrained = [s for s in shards if s.restart_slice < ctx.slices]
    full = _full_retrain_passes(session, ctx)
    rate = seconds / trained if trained else None
    created = _aware(ctx.request.created_at)
    cost = cost_section(
        wall_time_s=(datetime.now(UTC) - created).total_seconds() if created else None,
        samples_retrained=trained,
        full_retrain_samples=full,
        shards_retrained=len(retrained),
        slices_retrained=sum(ctx.slices - s.restart_slice for s in retrained),
        full_retrain_wall_time_s_estimate=rate * full if rate is not None else None,
        device=str(device(get_settings())),
    )
    plan = ctx.request.plan or {}
    started, completed = _aware(ctx.version.started_at), _aware(ctx.version.completed_at)
    cost.update(
        {
            "wall_time_from": "request received until its audit report was built",
            "unlearning_wall_time_s": (completed - started).total_seconds()
            if started and completed
            else None,
            "train_seconds": seconds,
            "seconds_per_sample_pass": rate,
            "audit_seconds": audit_seconds,
        }
    )
    if ctx.exact:  # the SISA plan's prediction, beside what was measured
        for key in ("slice_passes", "full_retrain_slice_passes", "predicted_speedup"):
            cost[key] = plan.get(key)
    if plan.get("coalesced_with"):
        cost["shared_with_requests"] = len(plan["coalesced_with"])
    return cost


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


def _append(
    session: Session,
    request: DeletionRequest,
    body: dict[str, Any],
    key: SigningKey,
    plots: dict[str, bytes],
) -> AuditReport:
    _lock_chain(session, request)
    previous = session.scalar(select(AuditReport.sha256).order_by(AuditReport.id.desc()).limit(1))
    envelope = seal_report(body, previous_sha256=previous, key=key)
    page = render_report_html(
        envelope, plots, verification=verify_envelope(envelope, key.public_pem())
    )
    row = AuditReport(
        request_id=request.id,
        sha256=envelope["integrity"]["sha256"],
        previous_sha256=previous,
        envelope=envelope,
        html=page,
    )
    session.add(row)
    session.flush()
    return row


def _plots(evidence: _Evidence, ctx: _Context) -> dict[str, bytes]:
    try:
        return build_plots(
            losses=evidence.losses,
            mia=evidence.mia,
            per_class_accuracy=evidence.efficacy.get("per_class"),
            prediction_distribution=evidence.efficacy.get("forget_prediction_distribution"),
            forgotten_classes=list(ctx.request.target_classes or []),
        )
    except Exception as exc:  # figures are a convenience; the signed JSON is the report
        log.error("audit of request %s: figures failed (%s)", ctx.request.id, _kind(exc))
        ctx.notes.append(f"The figures could not be drawn ({_kind(exc)}).")
        return {}


def _standard_notes(ctx: _Context) -> list[str]:
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
    ctx = _load_context(session, request, version)
    lineage = compute_lineage(session, version, ctx.target_hashes(), exact=ctx.exact)
    evidence = _measure(session, ctx)
    plots = _plots(evidence, ctx)
    body = build_report_body(
        request=_request_section(ctx),
        method=_method_section(ctx),
        versions=_versions_section(ctx),
        lineage=lineage,
        efficacy=evidence.efficacy,
        membership_inference=evidence.mia,
        cost=_cost(session, ctx, time.perf_counter() - began),
        notes=[*_standard_notes(ctx), *ctx.notes],
    )
    row = _append(session, request, body, signing_key(get_settings()), plots)
    log.info(
        "request %s: audit report %s (lineage %s, %d samples, %.1f s)",
        request.id,
        row.sha256[:16],
        lineage.get("status"),
        len(ctx.targets),
        time.perf_counter() - began,
    )
