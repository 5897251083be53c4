"""Request and response bodies of the HTTP contract (DESIGN.md section 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.inputs import FileName, NulFreeJson, Ref, ServerPath, ShortName, ShortText
from app.core.options import RequestOptions
from app.core.recipe import (
    HEADS,
    Aggregation,
    Augment,
    BatchSize,
    EpochsPerSlice,
    Head,
    ImageSize,
    LabelSmoothing,
    LearningRate,
    ModelRecipe,
    Momentum,
    Norm,
    Schedule,
    Seed,
    Shards,
    Slices,
    TrainingRecipe,
    Tune,
    WarmupFraction,
    WeightDecay,
    recommended_training,
)
from app.db.models import Role

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    root: ServerPath = Field(
        description="Absolute server-side ImageFolder path inside one of FORGETD_DATA_ROOTS",
    )


class DatasetOut(BaseModel):
    id: int
    name: str
    classes: list[str]
    channels: int
    counts: dict[str, Any]
    duplicate_content: dict[str, int] = Field(
        default_factory=dict,
        description="active samples with identical bytes: groups and extra_copies beyond the "
        "first of each (a deletion by file forgets every copy)",
    )
    created_at: datetime


class RecipeFields(BaseModel):
    """The flat recipe fields of ``POST /v1/models`` and of the import (one definition).

    An optimisation field left out takes the architecture's recommended value on
    ``POST /v1/models`` (``app.core.recipe.RECOMMENDED``) and the historical value on the import,
    whose weights were trained elsewhere and whose layers must stay the architecture's original.
    """

    model_config = ConfigDict(extra="forbid")
    epochs_per_slice: EpochsPerSlice = 2
    image_size: ImageSize = 32
    seed: Seed = 0
    lr: LearningRate | None = None
    momentum: Momentum | None = None
    weight_decay: WeightDecay | None = None
    batch_size: BatchSize | None = None
    schedule: Schedule | None = None
    warmup: WarmupFraction | None = None
    augment: Augment | None = None
    label_smoothing: LabelSmoothing | None = None
    norm: Norm | None = None

    def given_training(self) -> dict[str, Any]:
        return {
            name: value
            for name in TrainingRecipe.model_fields
            if (value := getattr(self, name)) is not None
        }

    def training(self) -> TrainingRecipe:
        # The historical optimiser fields are written out, as they always were.
        legacy = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
        return TrainingRecipe(**{**legacy, **self.given_training()})

    def recipe(self) -> ModelRecipe:
        return ModelRecipe(
            epochs_per_slice=self.epochs_per_slice,
            image_size=self.image_size,
            seed=self.seed,
            recipe=self.training(),
        )


class ModelCreate(RecipeFields):
    name: Name
    dataset: Ref
    architecture: ShortName = "small_cnn"
    shards: Shards = 5
    slices: Slices = 4
    aggregation: Aggregation = "mean_softmax"
    require_approval: bool = Field(
        False, description="deletion requests wait in pending_approval for an operator"
    )
    backbone: ShortText | None = Field(
        None,
        description="a registered backbone (name or id) or a torchvision spec such as "
        "'torchvision:resnet18:IMAGENET1K_V1': the model is per-shard heads on its fixed "
        "features; without it, constituents are trained from scratch",
    )
    head: Head | None = Field(None, description="the per-shard head: linear (default) or mlp")
    tune: Tune | None = Field(
        None, description="head (default), or last_block: also train the backbone's last stage"
    )

    def training(self) -> TrainingRecipe:
        if self.backbone is not None:
            return recommended_training(HEADS, self.given_training())
        return recommended_training(self.architecture, self.given_training())

    def recipe(self) -> ModelRecipe:
        return (
            super()
            .recipe()
            .model_copy(
                update={
                    "shards": self.shards,
                    "slices": self.slices,
                    "aggregation": self.aggregation,
                }
            )
        )


class ModelOut(BaseModel):
    id: int
    name: str
    dataset_id: int
    architecture: str
    config: dict[str, Any]
    status: str
    status_reason: str | None
    current_version: int | None
    retired_classes: list[str]
    versions: list[dict[str, Any]]
    metrics: dict[str, Any]
    progress: dict[str, Any] | None
    require_approval: bool = False


class DeletionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Ref
    filenames: list[FileName] | None = None
    class_name: ShortText | None = None
    class_names: list[ShortText] | None = Field(None, max_length=10_000)
    method: ShortName | None = "auto"
    method_config: Annotated[dict[str, Any], NulFreeJson] | None = None
    external_id: Annotated[str, Field(max_length=200), NulFreeJson] | None = None
    options: RequestOptions | None = None
    deadline_days: int | None = Field(
        None,
        ge=1,
        le=365,
        description="days from receipt to the deadline (default FORGETD_DEFAULT_DEADLINE_DAYS)",
    )


class DeletionOut(BaseModel):
    id: str
    model: int
    status: str
    status_reason: str | None
    progress: dict[str, Any]
    plan: dict[str, Any]
    method: str
    method_config: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)
    target: dict[str, Any]
    external_id: str | None
    timings: dict[str, Any] = Field(
        default_factory=dict,
        description="seconds per phase, recorded as each ends: queued_s, claim_s, retrain_s "
        "(per changed shard), evaluation_s, audit_s, erasure_s, total_s",
    )
    base_version: int | None
    result_version: int | None
    report_url: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    due_at: datetime | None = None
    overdue: bool = False
    attempt: int = 1
    attempts: list[dict[str, Any]] = Field(default_factory=list)


class DeletionPage(BaseModel):
    items: list[DeletionOut]
    total: int
    limit: int
    offset: int


class ModelImport(RecipeFields):
    """``POST /v1/models/import``: a model trained elsewhere. The recipe fields are used only if
    an exact method (sisa, retrain) later retrains the model."""

    name: Name
    dataset: Ref = Field(description="the dataset the model was trained on (id or name)")
    architecture: ShortName = Field(
        "small_cnn", description="a registered architecture the state_dict fits (GET /docs)"
    )
    class_names: list[ShortText] = Field(
        min_length=1,
        max_length=10_000,
        description="the class of each model output, in output order; the same set as the "
        "dataset's classes (the worker reorders the output layer when the order differs)",
    )
    # Not a ServerPath: the import answers every refused path alike (it is no file oracle).
    state_dict_path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="absolute server-side path, inside one of FORGETD_DATA_ROOTS, of a torch "
        "state_dict (.pt) saved with torch.save(model.state_dict()); loaded with "
        "weights_only=True. Inputs are expected normalised as (x/255 - 0.5)/0.5, like the "
        "service's own models. Or leave it out and upload the file as multipart field `file`.",
    )


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: Annotated[str, Field(max_length=200), NulFreeJson] = ""


class ApiKeyOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the key itself: shown only in this response")


class ChainHeadIntegrity(BaseModel):
    algorithm: str = Field(description="Ed25519")
    key_id: str = Field(description="the signing key, as published at GET /v1/keys")
    signature: str = Field(
        description="base64 Ed25519 signature of the canonical JSON of every other field"
    )


class ChainHead(BaseModel):
    """The signed end of the audit-report chain: a saved chain must reach it."""

    schema_: str = Field(alias="schema", description="forgetd.audit-chain-head/v1")
    count: int = Field(ge=0, description="reports in the chain")
    sequence: int = Field(ge=0, description="the last report's sequence number (0: none yet)")
    sha256: str | None = Field(description="sha256 of the last report (null: none yet)")
    signed_at: str = Field(description="when the head was signed (UTC, ISO 8601)")
    integrity: ChainHeadIntegrity
