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
Schedule = Literal["constant", "onecycle", "cosine"]
WarmupFraction = Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)]
Augment = Literal["none", "crop", "flip", "crop_flip"]
LabelSmoothing = Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)]
Norm = Literal["none", "batch", "group"]

# Fields added after models were first stored. Their defaults on TrainingRecipe are the
# historical behaviour (constant lr, no augmentation, plain cross-entropy, the architecture's
# original layers), so a stored recipe that lacks them trains exactly as it always did; a new
# model gets the recommended values written out explicitly (see ``recommended_training``).
_ADDED_FIELDS = ("schedule", "warmup", "augment", "label_smoothing", "norm")


class TrainingRecipe(BaseModel):
    """How each constituent is optimised (the part of the recipe that shapes its weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: LearningRate = Field(0.05, description="peak SGD learning rate")
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 5e-4
    batch_size: BatchSize = 64
    schedule: Schedule = Field(
        "constant",
        description="learning-rate schedule, restarted at every slice so a resumed shard "
        "trains exactly like one trained from scratch",
    )
    warmup: WarmupFraction = Field(
        0.25, description="fraction of a slice's steps spent warming up (onecycle, cosine)"
    )
    augment: Augment = Field(
        "none",
        description="random 4-px-padded crop and/or horizontal flip; use flip only where a "
        "mirrored image keeps its label",
    )
    label_smoothing: LabelSmoothing = 0.0
    norm: Norm | None = Field(
        None,
        description="normalisation layers of the architecture; unset means its original "
        "layers (none for small_cnn, batch norm for resnet18)",
    )

    def identity(self) -> dict[str, Any]:
        """The fields that key checkpoints. Fields absent from an older stored recipe stay
        unset and are left out, and an added field at its historical value is left out too, so
        an older recipe's checkpoint keys do not change however it was stored."""
        fields = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        legacy = TrainingRecipe.model_fields
        for name in _ADDED_FIELDS:
            if name in fields and getattr(self, name) == legacy[name].default:
                del fields[name]
        if fields.get("schedule", "constant") == "constant":
            fields.pop("warmup", None)  # no effect without a schedule
        return fields


# Defaults a user can rely on without tuning, per architecture (README "Training recipe" has the
# figures behind them). Applied when a model is created; never to a stored recipe.
RECOMMENDED: dict[str, dict[str, Any]] = {
    "small_cnn": {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "schedule": "onecycle",
        "warmup": 0.25,
        # Flip without the random crop: this three-conv network underfits the CIFAR-10 subset
        # (about 70% on its own training images at 15 epochs), and the crop's extra
        # regularisation cost it 3.2 points of test accuracy at 15 epochs (mean of 3 seeds each)
        # and 2.0 at 30. Use "crop" or "none" where a mirror image changes the label.
        "augment": "flip",
        "label_smoothing": 0.0,
        "norm": "batch",
    },
    "resnet18": {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "schedule": "onecycle",
        "warmup": 0.25,
        "augment": "crop_flip",
        "label_smoothing": 0.0,
        "norm": "batch",
    },
}


# Heads on a fixed backbone train on cached features: no augmentation (the features of an
# augmented image are not cached), and the other values suit a linear layer on pooled features.
HEADS = "heads"
RECOMMENDED[HEADS] = {
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 64,
    "schedule": "onecycle",
    "warmup": 0.25,
    "augment": "none",
    "label_smoothing": 0.0,
}


# The layers an architecture had before normalisation was a recipe option (``norm`` unset).
ORIGINAL_NORM: dict[str, str] = {"small_cnn": "none", "resnet18": "batch"}


def recommended_training(architecture: str, given: dict[str, Any]) -> TrainingRecipe:
    """The recommended recipe of ``architecture`` with the fields a user gave on top."""
    values = {**RECOMMENDED.get(architecture, {}), **given}
    return TrainingRecipe(**values)


class ImportedWeights(BaseModel):
    """Where an imported model's weights came from and how its outputs map to the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_sha256: str
    source_bytes: int
    class_names: list[str]
    dataset_classes: list[str]
    channels: int


Head = Literal["linear", "mlp"]
Tune = Literal["head", "last_block"]


class BackboneSpec(BaseModel):
    """The fixed, publicly trained feature extractor a model's heads stand on, as recorded in
    the model's lineage (a copy of the registered backbone at the time the model was made)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    name: str
    architecture: str
    sha256: str
    feature_dim: int
    trained_on: str
    image_size: int
    mean: list[float]
    std: list[float]
    stem: str = "standard"
    """"small": a resnet with a 3x3 stride-1 first convolution and no max-pool (small images)."""

    def preprocessing(self) -> dict[str, Any]:
        """What turns an image into the backbone's input (keys the embedding cache)."""
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std}


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
    backbone: BackboneSpec | None = None
    """Set for a model of per-shard heads on a fixed backbone."""
    head: Head = "linear"
    tune: Tune = "head"
    """"last_block" also trains the backbone's last stage, per shard."""

    @property
    def training(self) -> TrainingRecipe:
        return self.recipe

    @property
    def cells(self) -> int:
        return self.shards * self.slices

    def to_config(self) -> dict[str, Any]:
        """The JSON stored in ``Model.config``."""
        config = self.model_dump(mode="json", exclude_none=True)
        if self.backbone is None:  # a model trained from scratch keeps its historical shape
            config.pop("head", None)
            config.pop("tune", None)
        return config

    def backbone_identity(self) -> dict[str, Any] | None:
        """What the backbone adds to a constituent's checkpoint identity (None without one)."""
        if self.backbone is None:
            return None
        return {
            "sha256": self.backbone.sha256,
            "architecture": self.backbone.architecture,
            "stem": self.backbone.stem,
            **self.backbone.preprocessing(),
            "head": self.head,
            "tune": self.tune,
        }


def parse_recipe(config: dict[str, Any]) -> ModelRecipe:
    return ModelRecipe.model_validate(config)
