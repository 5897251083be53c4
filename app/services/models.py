"""Registering models: validate the SISA configuration and lay out version 1."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.architectures import architecture_names
from app.core.recipe import ModelRecipe, parse_recipe
from app.db.models import Dataset, Model, ModelStatus, ModelVersion, Sample, SampleState
from app.services.data_roots import clip
from app.services.datasets import get_dataset
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.versions import create_initial_version


def active_train_count(session: Session, dataset_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Sample.dataset_id == dataset_id,
                Sample.split == "train",
                Sample.state == SampleState.ACTIVE,
            )
        )
        or 0
    )


def check_new_model(
    session: Session,
    name: str,
    dataset_ref: int | str,
    architecture: str,
    *,
    on_backbone: bool = False,
) -> Dataset:
    """The checks every new model passes: a free name, a known dataset and architecture (the
    architecture of heads on a backbone was checked with the backbone)."""
    if session.scalar(select(Model.id).where(Model.name == name)) is not None:
        raise Conflict(f"a model named {name!r} already exists")
    dataset = get_dataset(session, dataset_ref)
    if not on_backbone and architecture not in architecture_names():
        raise InvalidInput(
            f"unknown architecture {clip(architecture)!r}; known: {architecture_names()}"
        )
    return dataset


def add_model(
    session: Session, name: str, dataset: Dataset, architecture: str, recipe: ModelRecipe
) -> tuple[Model, ModelVersion]:
    """Store the model with its recipe (round-tripped, so every field is recorded as set) and
    lay out version 1; the caller commits, then enqueues."""
    model = Model(
        name=name,
        dataset_id=dataset.id,
        architecture=architecture,
        config=parse_recipe(recipe.to_config()).to_config(),
        status=ModelStatus.TRAINING,
    )
    model.dataset = dataset
    session.add(model)
    session.flush()
    version = create_initial_version(session, model)
    return model, version


def create_model(
    session: Session, name: str, dataset_ref: int | str, architecture: str, recipe: ModelRecipe
) -> tuple[Model, ModelVersion]:
    """Store a model and its first version's manifest; the caller commits, then enqueues."""
    dataset = check_new_model(
        session, name, dataset_ref, architecture, on_backbone=recipe.backbone is not None
    )
    n_train = active_train_count(session, dataset.id)
    if n_train < recipe.cells * len(dataset.classes):
        raise InvalidInput(
            f"dataset {dataset.name!r} has {n_train} training samples: too few for "
            f"{recipe.shards} shards x {recipe.slices} slices x {len(dataset.classes)} classes"
        )
    return add_model(session, name, dataset, architecture, recipe)


def get_model(session: Session, ref: int | str) -> Model:
    if isinstance(ref, int) or ref.isdigit():
        model = session.get(Model, int(ref))
    else:
        model = session.scalar(select(Model).where(Model.name == ref))
    if model is None:
        raise NotFound(f"model {clip(ref)!r} does not exist")
    return model
