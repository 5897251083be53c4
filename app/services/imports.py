"""Registering a model trained elsewhere: a state_dict file plus its dataset and class order.

The API never parses the file (it imports no torch): it copies the bytes into the model store
and lays out a monolithic version 1 (one shard, one slice, every active training sample). A
worker task then loads the weights with ``weights_only=True`` into the named architecture,
reorders the output layer to the dataset's class order, stores the checkpoint, evaluates it and
marks the model ready, or failed with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.recipe import ImportedWeights, ModelRecipe
from app.core.store_namespaces import CHECKPOINTS, IMPORTS
from app.db.models import (
    Checkpoint,
    Dataset,
    Model,
    ModelVersion,
    ShardStatus,
    VersionShard,
)
from app.services.data_roots import (
    FileSizeError,
    UnsafeFileError,
    containing_root,
    read_file_under,
)
from app.services.errors import InvalidInput
from app.services.models import active_train_count, add_model, check_new_model
from models_store import LocalStore

IMPORT_METHOD = "import"


def import_key(source_sha256: str, recipe: ModelRecipe, architecture: str) -> str:
    """Content key of the checkpoint an import produces: the file's bytes and everything that
    shapes the converted weights (architecture, input, the output-layer reordering)."""
    imported = recipe.imported
    assert imported is not None
    identity = {
        "source_sha256": source_sha256,
        "architecture": architecture,
        "image_size": recipe.image_size,
        "imported_class_names": imported.class_names,
        "dataset_classes": imported.dataset_classes,
        "channels": imported.channels,
    }
    return hashlib.sha256(
        json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def check_class_names(dataset: Dataset, class_names: list[str]) -> None:
    """The model's outputs must be the dataset's classes, in any order (the worker reorders)."""
    repeated = sorted({c for c in class_names if class_names.count(c) > 1})
    missing = sorted(set(dataset.classes) - set(class_names))
    extra = sorted(set(class_names) - set(dataset.classes))
    if repeated or missing or extra:
        problems = {"repeated": repeated, "missing": missing, "unknown": extra}
        summary = "; ".join(f"{k}: {v}" for k, v in problems.items() if v)
        raise InvalidInput(
            f"class_names must list each of the dataset's {len(dataset.classes)} classes "
            f"exactly once ({summary})",
            class_problems={k: v for k, v in problems.items() if v},
            dataset_classes=dataset.classes,
        )


NOT_ALLOWED = (
    "state_dict_path is not an allowed file: it must be a readable regular file inside one "
    "of the data roots (FORGETD_DATA_ROOTS), reached without symbolic links"
)


def read_state_dict_file(path_text: str, data_roots: Sequence[Path], max_bytes: int) -> bytes:
    """The bytes of a state_dict file inside the data roots. Every path that is not allowed or
    not found gets the same answer, so the import reveals nothing about other files."""
    if not path_text.startswith("/") or "\x00" in path_text:
        raise InvalidInput(NOT_ALLOWED)
    real = Path(os.path.realpath(path_text))
    root = containing_root(real, data_roots)
    if root is None or real == root:
        raise InvalidInput(NOT_ALLOWED)
    try:
        return read_file_under(root, real.relative_to(root).as_posix(), max_bytes)
    except FileSizeError as exc:  # an allowed file: its size may be told
        raise InvalidInput(f"state_dict_path refused: {exc}") from None
    except UnsafeFileError:
        raise InvalidInput(NOT_ALLOWED) from None


def discard_import(store_root: Path, key: str) -> None:
    """Remove staged weights that no import will convert (the import failed)."""
    LocalStore(store_root).delete(IMPORTS, key)


def _check_spec(session: Session, spec: ImportSpec) -> Dataset:
    dataset = check_new_model(session, spec.name, spec.dataset, spec.architecture)
    check_class_names(dataset, spec.class_names)
    if not active_train_count(session, dataset.id):
        raise InvalidInput(f"dataset {dataset.name!r} has no active training samples")
    return dataset


def _recipe(spec: ImportSpec, dataset: Dataset, source_sha256: str, size: int) -> ModelRecipe:
    # One monolithic constituent; its training recipe is used only if an exact method (sisa,
    # retrain) later retrains the model from scratch.
    return spec.recipe.model_copy(
        update={
            "shards": 1,
            "slices": 1,
            "aggregation": "mean_softmax",
            "imported": ImportedWeights(
                source_sha256=source_sha256,
                source_bytes=size,
                class_names=list(spec.class_names),
                dataset_classes=list(dataset.classes),
                channels=dataset.channels,
            ),
        },
    )


@dataclass(frozen=True)
class ImportSpec:
    """What the import needs besides the bytes (built from the HTTP body)."""

    name: str
    dataset: int | str
    architecture: str
    class_names: list[str]
    recipe: ModelRecipe
    """Input size, seed and the recipe an exact method would retrain with."""


def create_imported_model(
    session: Session, spec: ImportSpec, data: bytes, store_root: Path
) -> tuple[Model, ModelVersion, str]:
    """Store the model and its version 1, then stage the bytes under the returned key; the
    caller commits (and on failure calls :func:`discard_import`), then enqueues the task."""
    if not data:
        raise InvalidInput("the state_dict is empty")
    dataset = _check_spec(session, spec)
    source_sha256 = hashlib.sha256(data).hexdigest()
    recipe = _recipe(spec, dataset, source_sha256, len(data))
    model, version = add_model(session, spec.name, dataset, spec.architecture, recipe)
    version.method = IMPORT_METHOD
    key = import_key(source_sha256, recipe, model.architecture)
    session.flush()
    session.execute(
        update(Checkpoint)
        .where(Checkpoint.version_id == version.id)
        .values(key=key, reused=False, artifact_sha256=None)
    )
    # Owned by the import task; restart_slice == slices so that nothing ever *trains* this
    # constituent (a sweep that re-sends train_shard finds nothing to train).
    session.execute(
        update(VersionShard)
        .where(VersionShard.version_id == version.id)
        .values(status=ShardStatus.RUNNING, restart_slice=1)
    )
    session.flush()
    store = LocalStore(store_root)
    if not store.exists(CHECKPOINTS, key):  # an identical import was converted already
        store.put(IMPORTS, key, data)
    return model, version, key
