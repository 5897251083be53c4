"""Registering models: validate the SISA configuration and lay out version 1."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Model, ModelStatus, ModelVersion, Sample, SampleState
from app.services.datasets import get_dataset
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.versions import create_initial_version
from worker.training.architectures import architecture_names


def create_model(session: Session, spec: dict[str, Any]) -> tuple[Model, ModelVersion]:
    """Store a model and its first version's manifest; the caller commits, then enqueues."""
    if session.scalar(select(Model.id).where(Model.name == spec["name"])) is not None:
        raise Conflict(f"a model named {spec['name']!r} already exists")
    dataset = get_dataset(session, spec["dataset"])
    if spec["architecture"] not in architecture_names():
        raise InvalidInput(
            f"unknown architecture {spec['architecture']!r}; known: {architecture_names()}"
        )
    n_train = (
        session.scalar(
            select(func.count()).where(
                Sample.dataset_id == dataset.id,
                Sample.split == "train",
                Sample.state == SampleState.ACTIVE,
            )
        )
        or 0
    )
    cells = spec["shards"] * spec["slices"]
    if n_train < cells * len(dataset.classes):
        raise InvalidInput(
            f"dataset {dataset.name!r} has {n_train} training samples: too few for "
            f"{spec['shards']} shards x {spec['slices']} slices x {len(dataset.classes)} classes"
        )
    config = {
        key: spec[key]
        for key in ("shards", "slices", "epochs_per_slice", "image_size", "seed", "aggregation")
    }
    config["recipe"] = {
        "lr": spec["lr"],
        "momentum": spec["momentum"],
        "weight_decay": spec["weight_decay"],
        "batch_size": spec["batch_size"],
    }
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
    return model, version


def get_model(session: Session, ref: int | str) -> Model:
    if isinstance(ref, int) or ref.isdigit():
        model = session.get(Model, int(ref))
    else:
        model = session.scalar(select(Model).where(Model.name == ref))
    if model is None:
        raise NotFound(f"model {ref!r} does not exist")
    return model
