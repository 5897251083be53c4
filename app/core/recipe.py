"""A model's recipe, typed once: what ``POST /v1/models`` and the import accept, what
``Model.config`` stores and what the worker trains with.

The stored JSON keeps the historical shape (``{"shards": .., "recipe": {..}, "imported": {..}}``)
so existing rows and checkpoint keys stay valid; read it only through :func:`parse_recipe`
(``Model.recipe``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Field types shared by the kernel's models and the HTTP bodies, so bounds are written once.
Aggregation = Literal["vote", "mean_softmax"]
Shards = Annotated[int, Field(ge=1, le=64)]
Slices = Annotated[int, Field(ge=1, le=32)]
EpochsPerSlice = Annotated[int, Field(ge=1, le=200)]
ImageSize = Annotated[int, Field(ge=8, le=256)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
LearningRate = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
Momentum = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
WeightDecay = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]


class TrainingRecipe(BaseModel):
    """How each constituent is optimised (the part of the recipe that shapes its weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: LearningRate = Field(0.05, description="peak SGD learning rate")
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 5e-4
    batch_size: BatchSize = 64

    def identity(self) -> dict[str, Any]:
        """The fields that key checkpoints. Fields absent from an older stored recipe stay
        unset and are left out, so that recipe's checkpoint keys do not change."""
        return self.model_dump(mode="json", exclude_unset=True)


class ImportedWeights(BaseModel):
    """Where an imported model's weights came from and how its outputs map to the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_sha256: str
    source_bytes: int
    class_names: list[str]
    dataset_classes: list[str]
    channels: int


class ModelRecipe(BaseModel):
    """SISA layout plus training recipe of one registered model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: Shards = 5
    slices: Slices = 4
    epochs_per_slice: EpochsPerSlice = 2
    image_size: ImageSize = 32
    seed: Seed = 0
    aggregation: Aggregation = "mean_softmax"
    recipe: TrainingRecipe = Field(default_factory=TrainingRecipe)
    """The optimisation recipe (stored under this key for compatibility)."""
    imported: ImportedWeights | None = None
    """Set for a model registered through the import."""

    @property
    def training(self) -> TrainingRecipe:
        return self.recipe

    @property
    def cells(self) -> int:
        return self.shards * self.slices

    def to_config(self) -> dict[str, Any]:
        """The JSON stored in ``Model.config``."""
        return self.model_dump(mode="json", exclude_none=True)


def parse_recipe(config: dict[str, Any]) -> ModelRecipe:
    return ModelRecipe.model_validate(config)
