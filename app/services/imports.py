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
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    Dataset,
    Model,
    ModelStatus,
    ModelVersion,
    Sample,
    SampleState,
    ShardStatus,
    VersionShard,
)
from app.services.datasets import get_dataset
from app.services.errors import Conflict, InvalidInput
from app.services.versions import create_initial_version
from models_store import LocalStore
from worker.training.architectures import architecture_names

# Store namespaces: the uploaded bytes wait in IMPORTS until the worker has turned them into a
# checkpoint under CHECKPOINTS (the same name as worker.constituents.CHECKPOINTS, which the
# torch-free API cannot import).
IMPORTS = "imports"
CHECKPOINTS = "checkpoints"
IMPORT_METHOD = "import"
MAX_STATE_DICT_BYTES = 2 * 1024**3


def import_key(source_sha256: str, model_config: dict[str, Any], architecture: str) -> str:
    """Content key of the checkpoint an import produces: the file's bytes and everything that
    shapes the converted weights (architecture, input, the output-layer reordering)."""
    identity = {
        "source_sha256": source_sha256,
        "architecture": architecture,
        "image_size": model_config["image_size"],
        "imported_class_names": model_config["imported"]["class_names"],
        "dataset_classes": model_config["imported"]["dataset_classes"],
        "channels": model_config["imported"]["channels"],
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


def read_state_dict_file(path_text: str) -> bytes:
    path = Path(path_text)
    if not path.is_absolute():
        raise InvalidInput(
            f"state_dict_path must be an absolute server-side path, got {path_text!r}"
        )
    if not path.is_file():
        raise InvalidInput(f"state_dict_path {path_text!r} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0 or size > MAX_STATE_DICT_BYTES:
        raise InvalidInput(
            f"state_dict_path {path_text!r} has {size} bytes; expected 1..{MAX_STATE_DICT_BYTES}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"state_dict_path {path_text!r} cannot be read: {exc.strerror}"
        ) from None


def _check_spec(session: Session, spec: dict[str, Any]) -> Dataset:
    if session.scalar(select(Model.id).where(Model.name == spec["name"])) is not None:
        raise Conflict(f"a model named {spec['name']!r} already exists")
    dataset = get_dataset(session, spec["dataset"])
    if spec["architecture"] not in architecture_names():
        raise InvalidInput(
            f"unknown architecture {spec['architecture']!r}; known: {architecture_names()}"
        )
    check_class_names(dataset, spec["class_names"])
    n_train = session.scalar(
        select(func.count()).where(
            Sample.dataset_id == dataset.id,
            Sample.split == "train",
            Sample.state == SampleState.ACTIVE,
        )
    )
    if not n_train:
        raise InvalidInput(f"dataset {dataset.name!r} has no active training samples")
    return dataset


def _config(spec: dict[str, Any], dataset: Dataset, source_sha256: str, size: int) -> dict:
    return {
        "shards": 1,
        "slices": 1,
        # Used only if an exact method (sisa, retrain) later retrains the model from scratch.
        "epochs_per_slice": spec["epochs_per_slice"],
        "image_size": spec["image_size"],
        "seed": spec["seed"],
        "aggregation": "mean_softmax",
        "recipe": {
            "lr": spec["lr"],
            "momentum": spec["momentum"],
            "weight_decay": spec["weight_decay"],
            "batch_size": spec["batch_size"],
        },
        "imported": {
            "source_sha256": source_sha256,
            "source_bytes": size,
            "class_names": list(spec["class_names"]),
            "dataset_classes": list(dataset.classes),
            "channels": dataset.channels,
        },
    }


def create_imported_model(
    session: Session, spec: dict[str, Any], store_root: Path
) -> tuple[Model, ModelVersion]:
    """Store the model, its version 1 and the uploaded bytes; the caller commits, then enqueues
    the import task."""
    dataset = _check_spec(session, spec)
    data = read_state_dict_file(spec["state_dict_path"])
    source_sha256 = hashlib.sha256(data).hexdigest()
    config = _config(spec, dataset, source_sha256, len(data))
    model = Model(
        name=spec["name"],
        dataset_id=dataset.id,
        architecture=spec["architecture"],
        config=config,
        status=ModelStatus.TRAINING,
    )
    model.dataset = dataset
    session.add(model)
    session.flush()
    version = create_initial_version(session, model)
    version.method = IMPORT_METHOD
    key = import_key(source_sha256, config, model.architecture)
    store = LocalStore(store_root)
    if not store.exists(CHECKPOINTS, key):  # an identical import was converted already
        store.put(IMPORTS, key, data)
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
    return model, version
