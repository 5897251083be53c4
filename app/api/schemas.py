"""Request and response bodies of the HTTP contract (DESIGN.md section 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    root: str = Field(min_length=1, description="Absolute server-side ImageFolder path")


class DatasetOut(BaseModel):
    id: int
    name: str
    classes: list[str]
    channels: int
    counts: dict[str, Any]
    created_at: datetime


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: int | str
    architecture: str = "small_cnn"
    shards: int = Field(5, ge=1, le=64)
    slices: int = Field(4, ge=1, le=32)
    epochs_per_slice: int = Field(2, ge=1, le=200)
    image_size: int = Field(32, ge=8, le=256)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    aggregation: Literal["vote", "mean_softmax"] = "mean_softmax"
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(64, ge=1, le=4096)


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


class DeletionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: int | str
    filenames: list[str] | None = None
    class_name: str | None = None
    class_names: list[str] | None = None
    method: str | None = "auto"
    method_config: dict[str, Any] | None = None
    external_id: str | None = Field(None, max_length=200)


class DeletionOut(BaseModel):
    id: str
    model: int
    status: str
    status_reason: str | None
    progress: dict[str, Any]
    plan: dict[str, Any]
    method: str
    method_config: dict[str, Any]
    target: dict[str, Any]
    external_id: str | None
    base_version: int | None
    result_version: int | None
    report_url: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class DeletionPage(BaseModel):
    items: list[DeletionOut]
    total: int
    limit: int
    offset: int
