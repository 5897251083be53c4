"""The samples the audit scores, and each version's predictions on them.

Three sets, concatenated in this order: the forgotten samples the previous version trained on
(members), held-out test samples of the same classes (non-members), and a random sample of the
training data the new version kept. Sizes are capped so the audit stays a small fraction of
the deletion; subsets are drawn with the request's seed.

Privacy: file paths are read here solely to decode images; they never leave this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ManifestEntry, ModelVersion, Sample
from app.repositories.samples import active_test_ids
from app.settings import get_settings
from worker.audit import mia
from worker.audit.context import AuditContext
from worker.constituents import CHECKPOINTS, final_checkpoints, fresh_constituent
from worker.flows.common import device, store
from worker.predictions import load_cached, split_digest
from worker.samples import SampleRow, load_tensors, sample_rows
from worker.training.data import load_images
from worker.training.evaluate import aggregate, predict_proba
from worker.training.trainer import load_checkpoint

__all__ = [
    "EvalSets",
    "Stage",
    "accuracy",
    "eval_sets",
    "predict_version",
    "sample_caps",
    "sample_losses",
]


def sample_caps() -> dict[str, int]:
    """The configured caps per set (settings ``audit_max_*``); the attacks' power is bounded by
    the forgotten set anyway, and every image costs one forward pass per constituent of two
    versions, which must stay small next to the retrain."""
    settings = get_settings()
    return {
        "forget": settings.audit_max_members,
        "test": settings.audit_max_nonmembers,
        "retain": settings.audit_max_retain,
    }


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class EvalSets:
    """The images the audit scores, concatenated: members, non-members, retained samples."""

    images: torch.Tensor
    labels: np.ndarray
    member_shards: np.ndarray  # the parent constituent that trained each member
    sizes: dict[str, int]
    caps: dict[str, int] = field(default_factory=dict)
    test_positions: list[int] = field(default_factory=list)
    """Where each non-member sits in the active test split (its cached predictions' rows)."""
    test_digest: str = ""
    """The active test split's digest (:func:`worker.predictions.split_digest`)."""

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


def _members(
    session: Session, ctx: AuditContext, rng: np.random.Generator, cap: int
) -> list[tuple[int, int]]:
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
    if len(members) > cap:
        ctx.notes.append(
            f"Membership inference and forget-set accuracy use {cap} of the "
            f"{len(members)} forgotten training samples, drawn at random (seeded by the request)."
        )
    return _subsample(members, cap, rng)


@dataclass
class _NonMembers:
    ids: list[int]
    images: torch.Tensor
    positions: list[int]
    digest: str


def _nonmembers(
    session: Session, ctx: AuditContext, classes: set[int], rng: np.random.Generator, cap: int
) -> _NonMembers:
    """Active held-out test samples of the members' classes (never trained on by any version),
    their images and their positions in the active test split.

    The whole active test set is read in the order the version's evaluation just read it, so
    its decoded copy comes from the on-disk cache instead of being decoded again, and the
    constituents' cached test predictions can answer for these samples.
    """
    ids = active_test_ids(session, ctx.model.dataset_id)
    rows = sample_rows(session, ids)
    digest = split_digest(rows, ctx.model.recipe.image_size)
    wanted = [i for i, r in enumerate(rows) if r.class_index in classes]
    chosen = _subsample(wanted, cap, rng)
    if not chosen:
        return _NonMembers([], _load_rows(ctx, [], cache=False), [], digest)
    images = _load_rows(ctx, rows, cache=True)
    picked = images[torch.tensor(chosen, dtype=torch.long)]
    return _NonMembers([ids[i] for i in chosen], picked, chosen, digest)


def _retained(session: Session, ctx: AuditContext, rng: np.random.Generator, cap: int) -> list[int]:
    """A random sample of the training data the new version kept."""
    ids = session.scalars(
        select(ManifestEntry.sample_id)
        .join(Sample, Sample.id == ManifestEntry.sample_id)
        .where(ManifestEntry.version_id == ctx.version.id)
        .order_by(Sample.sha256, Sample.id)
    ).all()
    return _subsample(list(ids), cap, rng)


def _load_rows(ctx: AuditContext, rows: list[SampleRow], *, cache: bool) -> torch.Tensor:
    dataset, size = ctx.model.dataset, ctx.model.recipe.image_size
    if cache:
        images, _ = load_tensors(get_settings(), dataset, rows, size)
        return images
    # Forgotten images are decoded without the on-disk cache: no decoded copy of them is left.
    root = Path(dataset.root)
    if not rows:
        return torch.zeros((0, dataset.channels, size, size), dtype=torch.uint8)
    return load_images(
        [root / str(r.rel_path) for r in rows], image_size=size, channels=dataset.channels
    )


def eval_sets(session: Session, ctx: AuditContext) -> EvalSets:
    rng = np.random.default_rng(ctx.seed)
    caps = sample_caps()
    members = _members(session, ctx, rng, caps["forget"])
    member_rows = sample_rows(session, [sid for sid, _ in members])
    if ctx.is_class_target:
        member_classes = {ctx.classes.index(c) for c in ctx.request.target_classes}
    else:
        member_classes = {r.class_index for r in member_rows}
    test = _nonmembers(session, ctx, member_classes, rng, caps["test"])
    test_rows = sample_rows(session, test.ids)
    retain_rows = sample_rows(session, _retained(session, ctx, rng, caps["retain"]))
    images = torch.cat(
        [
            _load_rows(ctx, member_rows, cache=False),
            test.images,
            _load_rows(ctx, retain_rows, cache=True),
        ]
    )
    labels = np.array(
        [r.class_index for r in (*member_rows, *test_rows, *retain_rows)], dtype=np.int64
    )
    return EvalSets(
        images=images,
        labels=labels,
        member_shards=np.array([shard for _, shard in members], dtype=np.int64),
        sizes={"forget": len(member_rows), "test": len(test_rows), "retain": len(retain_rows)},
        caps=caps,
        test_positions=test.positions,
        test_digest=test.digest,
    )


# --------------------------------------------------------------------------- predictions


def predict_version(
    session: Session,
    ctx: AuditContext,
    version: ModelVersion,
    sets: EvalSets,
    known: dict[str, np.ndarray],
) -> list[np.ndarray]:
    """Per-constituent softmax [N, K] of ``version`` in shard order.

    ``known`` maps checkpoint keys to predictions already made: a constituent that the new
    version reused unchanged from its parent is not run twice. The non-members are held-out
    test samples: a constituent's cached test predictions answer for them when they were made
    on today's test split, so only the members and retained samples are run.
    """
    dev = device(get_settings())
    test = sets.part("test")
    out: list[np.ndarray] = []
    for checkpoint in final_checkpoints(session, version, ctx.slices):
        cached = known.get(checkpoint.key) if checkpoint.reused else None
        if cached is None:
            net = fresh_constituent(ctx.model, checkpoint.shard)
            load_checkpoint(store().get(CHECKPOINTS, checkpoint.key), net, None, "cpu")
            # channels_last makes these small convolutions about 1.6x faster on CPU.
            net = net.to(dev).to(memory_format=torch.channels_last)
            split = load_cached(store(), checkpoint, sets.test_digest) if sets.test_digest else None
            if split is None or not sets.test_positions:
                cached = _proba(net, sets.images, dev)
            else:
                rest = torch.cat([sets.images[: test.start], sets.images[test.stop :]])
                scored = _proba(net, rest, dev)
                from_split = split[torch.tensor(sets.test_positions, dtype=torch.long)]
                cached = np.concatenate(
                    [
                        scored[: test.start],
                        from_split.numpy().astype(np.float64),
                        scored[test.start :],
                    ]
                )
            del net
        known[checkpoint.key] = cached
        out.append(cached)
    return out


def _proba(net: torch.nn.Module, images: torch.Tensor, dev: torch.device) -> np.ndarray:
    return predict_proba(net, images, device=dev).numpy().astype(np.float64)


@dataclass
class Stage:
    """One version's view of the evaluation sets."""

    per_shard: list[np.ndarray]  # constituent softmax [N, K]
    mean: np.ndarray  # mean softmax, what the attacks read
    predicted: np.ndarray  # class predicted with the model's own aggregation

    @classmethod
    def of(cls, per_shard: list[np.ndarray], aggregation: str) -> Stage:
        mean = np.mean(np.stack(per_shard), axis=0)
        scores = aggregate([torch.from_numpy(p) for p in per_shard], aggregation)  # type: ignore[arg-type]
        return cls(per_shard=per_shard, mean=mean, predicted=scores.argmax(1).numpy())


def sample_losses(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return mia.features_from_proba(proba, labels)[:, 0]


def accuracy(stage: Stage | None, labels: np.ndarray, part: slice) -> float | None:
    if stage is None:
        return None
    pred = stage.predicted[part]
    return float(np.mean(pred == labels[part])) if pred.size else None
