"""The weight-filter job of a model: per-class filters trained once on a frozen version, then
applied by ``weight_filtering`` deletion requests (``app.core.methods.weight_filtering``)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models import Base, utcnow


class FilterStatus(enum.StrEnum):
    QUEUED = "queued"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    PURGED = "purged"
    """Their blobs were deleted: a later version no longer matches them, or saw erased data."""


class WeightFilterJob(Base):
    __tablename__ = "weight_filters"
    __table_args__ = (Index("ix_weight_filters_model", "model_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    # The version whose constituents the filters were trained on.
    trained_on_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    # The version they apply to now: the trained-on one, then each version that a
    # weight_filtering request made from it (the remaining rows compose with what was applied).
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default=FilterStatus.QUEUED)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # FilterTrainingConfig, every default filled in.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(32))
    # Class names whose filter rows are still held (a forgotten class's row is deleted).
    classes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Per class: its filter's forget and retained accuracy on the validation split.
    accuracy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Per constituent: seconds spent training its filters (shards done survive a restart).
    shards: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # The task run that owns the job, its last sign of life, and how many runs took it.
    worker_token: Mapped[str | None] = mapped_column(String(36))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
