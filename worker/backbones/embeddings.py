"""The embedding cache: each image's features under a backbone, computed once, in batches,
and stored content-keyed (backbone sha256 + preprocessing + where the features are cut + the
image's sha256), so training or retraining a head is a few passes over small vectors.

Features are derived from the image: erasing a sample deletes them (:func:`purge_embeddings`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.recipe import ModelRecipe, parse_recipe
from app.core.store_namespaces import EMBEDDINGS
from app.db.models import Dataset, Model
from app.settings import Settings
from models_store import LocalStore
from worker.backbones.heads import HeadNet, clear_feature_memo, tensor_bytes
from worker.samples import SampleRow, load_tensors
from worker.training.data import to_model_input

BATCH = 128


def preprocessing_id(recipe: ModelRecipe, channels: int) -> str:
    """Everything between an image's bytes and its cached features, as one string."""
    spec = recipe.backbone
    assert spec is not None
    identity = {
        "backbone_sha256": spec.sha256,
        "architecture": spec.architecture,
        "stem": spec.stem,
        **spec.preprocessing(),
        "channels": channels,
        "cut": recipe.tune,
    }
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def embedding_key(preprocessing: str, image_sha256: str) -> str:
    return hashlib.sha256(f"{preprocessing}\n{image_sha256}".encode()).hexdigest()


def _decode(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(blob), allow_pickle=False))


@torch.no_grad()
def _compute(
    settings: Settings,
    dataset: Dataset,
    recipe: ModelRecipe,
    rows: Sequence[SampleRow],
    net: HeadNet,
    device: torch.device,
) -> dict[str, bytes]:
    """Features of ``rows`` (by image hash), computed in batches."""
    images, _ = load_tensors(settings, dataset, rows, recipe.image_size)
    out: dict[str, bytes] = {}
    for start in range(0, len(rows), BATCH):
        batch = images[start : start + BATCH].to(device)
        feats = net.features(to_model_input(batch)).float().cpu()
        for row, feat in zip(rows[start : start + BATCH], feats, strict=True):
            out[row.sha256] = tensor_bytes(feat)
    return out


def cached_features(
    settings: Settings,
    store: LocalStore,
    model: Model,
    rows: Sequence[SampleRow],
    net: HeadNet,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, ...] (float32, CPU) and labels [N] of ``rows``, computing only those not
    in the cache; in the order of ``rows``."""
    recipe = model.recipe
    prep = preprocessing_id(recipe, model.dataset.channels)
    keys = [embedding_key(prep, r.sha256) for r in rows]
    missing: dict[str, SampleRow] = {}
    for row, key in zip(rows, keys, strict=True):
        if not store.exists(EMBEDDINGS, key):
            missing.setdefault(row.sha256, row)
    if missing:
        computed = _compute(settings, model.dataset, recipe, list(missing.values()), net, device)
        for sha, blob in computed.items():
            store.put(EMBEDDINGS, embedding_key(prep, sha), blob)
    labels = torch.tensor([r.class_index for r in rows], dtype=torch.int64)
    if not rows:
        return torch.zeros((0, recipe.backbone.feature_dim)), labels  # type: ignore[union-attr]
    feats = torch.stack([_decode(store.get(EMBEDDINGS, key)) for key in keys])
    return feats, labels


def dataset_preprocessings(session: Session, dataset_id: int) -> set[str]:
    """Every preprocessing under which features of the dataset's images may be cached."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        return set()
    configs = session.scalars(select(Model.config).where(Model.dataset_id == dataset_id)).all()
    found = set()
    for config in configs:
        recipe = parse_recipe(config)
        if recipe.backbone is not None:
            found.add(preprocessing_id(recipe, dataset.channels))
    return found


def purge_embeddings(
    session: Session, store: LocalStore, dataset_id: int, image_hashes: Iterable[str]
) -> int:
    """Delete the cached features of erased images under every backbone used on the dataset;
    returns how many entries were removed."""
    clear_feature_memo()
    preps = dataset_preprocessings(session, dataset_id)
    removed = 0
    for sha in set(image_hashes):
        for prep in preps:
            removed += store.delete(EMBEDDINGS, embedding_key(prep, sha))
    return removed
