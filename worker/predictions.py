"""Constituents' test-split predictions, cached in the model store under their checkpoint keys.

A constituent's weights never change under its key, so its softmax on the test split is computed
once and reused by every later version that keeps the constituent: a deletion evaluates only the
constituents it retrained. Each blob records what it was computed from, the digest of the test
samples evaluated (ids and content hashes in order, and the image size) and the sha256 of the
checkpoint's bytes, and is used only when both still match: an erased test file or a rewritten
checkpoint never lets a stale prediction through. It is deleted with its checkpoint
(:func:`delete_checkpoint_blobs`), since it is derived from weights that saw the erased data.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.store_namespaces import CHECKPOINTS, PREDICTIONS

__all__ = [
    "PREDICTIONS",
    "SplitPredictions",
    "delete_checkpoint_blobs",
    "load_cached",
    "purge_dataset_predictions",
    "save_cached",
    "split_digest",
    "split_predictions",
]
from app.db.models import Checkpoint, Model, ModelVersion, Sample
from models_store import LocalStore
from worker.constituents import final_checkpoints, fresh_constituent
from worker.samples import SampleRow
from worker.training.evaluate import predict_proba
from worker.training.trainer import load_checkpoint


def split_digest(rows: Sequence[SampleRow], image_size: int) -> str:
    """Which test samples were evaluated, in which order, at which size."""
    digest = hashlib.sha256(f"image_size={image_size}\n".encode())
    for row in rows:
        digest.update(f"{row.sample_id}:{row.sha256}\n".encode())
    return digest.hexdigest()


def load_cached(store: LocalStore, checkpoint: Checkpoint, digest: str) -> torch.Tensor | None:
    """The cached softmax of ``checkpoint`` on the test samples ``digest`` names, or None."""
    if checkpoint.artifact_sha256 is None:
        return None
    try:
        blob = store.get(PREDICTIONS, checkpoint.key)
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (KeyError, RuntimeError, ValueError, EOFError):
        return None
    if (
        not isinstance(payload, dict)
        or payload.get("test_digest") != digest
        or payload.get("checkpoint_sha256") != checkpoint.artifact_sha256
    ):
        return None
    proba = payload.get("proba")
    return proba if isinstance(proba, torch.Tensor) else None


def save_cached(
    store: LocalStore, checkpoint: Checkpoint, digest: str, proba: torch.Tensor
) -> None:
    if checkpoint.artifact_sha256 is None:
        return
    buffer = io.BytesIO()
    payload = {
        "test_digest": digest,
        "checkpoint_sha256": checkpoint.artifact_sha256,
        "proba": proba.float().cpu().contiguous(),
    }
    torch.save(payload, buffer)
    store.put(PREDICTIONS, checkpoint.key, buffer.getvalue())


def delete_checkpoint_blobs(store: LocalStore, key: str) -> None:
    """A checkpoint's weights and everything derived from them in the store."""
    store.delete(CHECKPOINTS, key)
    store.delete(PREDICTIONS, key)


def purge_dataset_predictions(
    session: Session, store: LocalStore, dataset_id: int, erased: Iterable[int]
) -> int:
    """Erased test images leave no predictions behind: when any of ``erased`` is a test sample,
    every cached test prediction of the dataset's models goes (each holds a row derived from
    that image). Returns how many blobs were deleted."""
    ids = sorted(erased)
    if not ids or not session.scalar(
        select(Sample.id).where(Sample.id.in_(ids), Sample.split == "test").limit(1)
    ):
        return 0
    keys = session.scalars(
        select(Checkpoint.key)
        .join(ModelVersion, ModelVersion.id == Checkpoint.version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(Model.dataset_id == dataset_id)
        .distinct()
    ).all()
    return sum(store.delete(PREDICTIONS, key) for key in keys)


@dataclass
class SplitPredictions:
    """Per-constituent softmax [N, K] on the test split, in shard order."""

    probas: list[torch.Tensor]
    digest: str
    shards: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    """Shards whose constituent was run here (the others came from the cache)."""

    @property
    def cached(self) -> list[int]:
        return [s for s in self.shards if s not in self.evaluated]


def split_predictions(
    session: Session,
    store: LocalStore,
    model: Model,
    version: ModelVersion,
    rows: Sequence[SampleRow],
    images: Callable[[], torch.Tensor],
    device: torch.device,
) -> SplitPredictions:
    """Every constituent's softmax on the test samples ``rows``; ``images`` decodes them and is
    called only when some constituent has no valid cached prediction."""
    digest = split_digest(rows, model.recipe.image_size)
    decoded: torch.Tensor | None = None
    result = SplitPredictions(probas=[], digest=digest)
    for checkpoint in final_checkpoints(session, version, model.recipe.slices):
        proba = load_cached(store, checkpoint, digest)
        if proba is None or proba.shape[0] != len(rows):
            if decoded is None:
                decoded = images()
            net = fresh_constituent(model, checkpoint.shard)
            load_checkpoint(store.get(CHECKPOINTS, checkpoint.key), net, None, map_location="cpu")
            # channels_last makes these small convolutions about 1.4x faster on CPU.
            net = net.to(device).to(memory_format=torch.channels_last).eval()
            proba = predict_proba(net, decoded, device=device)
            save_cached(store, checkpoint, digest, proba)
            result.evaluated.append(checkpoint.shard)
        result.probas.append(proba)
        result.shards.append(checkpoint.shard)
    return result
