"""Building constituent models and loading them from the model store."""

from __future__ import annotations

import hashlib

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.store_namespaces import CHECKPOINTS, PREDICTIONS
from app.db.models import Checkpoint, Model, ModelVersion
from models_store import LocalStore
from worker.training.architectures import build_model
from worker.training.trainer import load_checkpoint, seed_everything


def derived_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (model seed, shard, slice...)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def fresh_constituent(model: Model, shard: int) -> torch.nn.Module:
    """A constituent's initial weights: seeded by (model seed, shard), so a retrain is repeatable."""
    if model.recipe.backbone is not None:  # per-shard heads on a fixed backbone
        from worker.backbones.heads import head_net
        from worker.flows.common import store

        seed = derived_seed(model.recipe.seed, shard)
        return head_net(store(), model.recipe, len(model.dataset.classes), seed)
    seed_everything(derived_seed(model.recipe.seed, shard))
    return build_model(
        model.architecture,
        num_classes=len(model.dataset.classes),
        in_channels=model.dataset.channels,
        image_size=model.recipe.image_size,
        norm=model.recipe.training.norm,  # None: the architecture's original layers
    )


def final_checkpoints(session: Session, version: ModelVersion, slices: int) -> list[Checkpoint]:
    return list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.version_id == version.id, Checkpoint.slice == slices - 1)
            .order_by(Checkpoint.shard)
        ).all()
    )


def load_constituents(
    session: Session, store: LocalStore, model: Model, version: ModelVersion, device: torch.device
) -> list[torch.nn.Module]:
    """Every constituent of a version, in shard order, in eval mode on `device`."""
    constituents = []
    for checkpoint in final_checkpoints(session, version, model.recipe.slices):
        net = fresh_constituent(model, checkpoint.shard)
        load_checkpoint(store.get(CHECKPOINTS, checkpoint.key), net, None, map_location="cpu")
        constituents.append(net.to(device).eval())
    return constituents


def purge_version(session: Session, store: LocalStore, version: ModelVersion) -> int:
    """Drop the weights of a version that will never serve (refused, failed, missed): its
    records are marked purged and each blob no live record shares is deleted (the parent's own
    checkpoints, which a reused slot points at, stay until an erasure purges them).
    Returns how many records were purged."""
    keys = set()
    rows = session.scalars(
        select(Checkpoint).where(Checkpoint.version_id == version.id, Checkpoint.purged.is_(False))
    ).all()
    for checkpoint in rows:
        checkpoint.purged = True
        keys.add(checkpoint.key)
    session.flush()
    for key in keys:
        still_used = session.scalar(
            select(Checkpoint.id)
            .where(Checkpoint.key == key, Checkpoint.purged.is_(False))
            .limit(1)
        )
        if still_used is None:
            # The cached test predictions are derived from the weights: they go with them.
            store.delete(CHECKPOINTS, key)
            store.delete(PREDICTIONS, key)
    return len(rows)
