"""SQLAlchemy models: the database is the source of truth for every request and version."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.core.recipe import ModelRecipe, parse_recipe


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def new_uuid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class SampleState(enum.StrEnum):
    ACTIVE = "active"
    # Checked and about to be unlinked: out of every training set, not yet erased.
    ERASING = "erasing"
    DELETED = "deleted"


class ModelStatus(enum.StrEnum):
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


class VersionStatus(enum.StrEnum):
    TRAINING = "training"
    EVALUATING = "evaluating"
    READY = "ready"
    FAILED = "failed"


class ShardStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Role(enum.StrEnum):
    """What an API key may do (the HTTP layer maps each route to the roles it admits)."""

    REQUESTER = "requester"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


class RequestStatus(enum.StrEnum):
    # Waits for an operator's approve or deny (models with require_approval).
    PENDING_APPROVAL = "pending_approval"
    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    DENIED = "denied"


OPEN_REQUEST_STATES = (
    RequestStatus.PENDING_APPROVAL,
    RequestStatus.RECEIVED,
    RequestStatus.QUEUED,
    RequestStatus.RUNNING,
    RequestStatus.VERIFYING,
)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    root: Mapped[str] = mapped_column(Text)
    classes: Mapped[list[Any]] = mapped_column(JSON)
    channels: Mapped[int] = mapped_column(Integer)
    has_test_folder: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Backbone(Base):
    """A fixed feature extractor trained on public data, registered once, shared by models."""

    __tablename__ = "backbones"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    architecture: Mapped[str] = mapped_column(String(64))
    # Content hash of the stored weights (their key in the model store's backbones namespace).
    sha256: Mapped[str] = mapped_column(String(64))
    feature_dim: Mapped[int] = mapped_column(Integer)
    trained_on: Mapped[str] = mapped_column(Text)
    image_size: Mapped[int] = mapped_column(Integer)
    mean: Mapped[list[Any]] = mapped_column(JSON)
    std: Mapped[list[Any]] = mapped_column(JSON)
    stem: Mapped[str] = mapped_column(String(16), default="standard")
    # "upload" or "torchvision:<architecture>:<weights>".
    source: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "rel_path", name="uq_samples_dataset_path"),
        Index("ix_samples_dataset_name", "dataset_id", "file_name"),
        Index("ix_samples_dataset_split_class", "dataset_id", "split", "class_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    # Path relative to the dataset root, e.g. "train/cat/0001.jpg". Both names are set to NULL
    # when the sample is erased: only its hash, class, split and state remain.
    rel_path: Mapped[str | None] = mapped_column(String(1000))
    file_name: Mapped[str | None] = mapped_column(String(255))
    # "train" or "test"; held-out samples of a dataset without test/ are "test" too.
    split: Mapped[str] = mapped_column(String(8))
    class_index: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default=SampleState.ACTIVE)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    architecture: Mapped[str] = mapped_column(String(64))
    # ModelRecipe.to_config(); read it through `recipe`.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.TRAINING)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Deletion requests wait in pending_approval until an operator approves them.
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    current_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True, name="fk_models_current_version")
    )
    # Token of the worker batch that owns the model's next version; NULL when idle. Claimed
    # with a conditional UPDATE so two workers never build versions of one model at once.
    active_batch: Mapped[str | None] = mapped_column(String(36))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    dataset: Mapped[Dataset] = relationship()

    @property
    def recipe(self) -> ModelRecipe:
        """The typed view of ``config``."""
        return parse_recipe(self.config)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_versions_model_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    # "initial" or "deletion".
    reason: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(32))
    # Non-empty for a forced full retrain: keeps its checkpoints apart from reusable ones.
    checkpoint_salt: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.TRAINING)
    status_reason: Mapped[str | None] = mapped_column(Text)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    retired_classes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ManifestEntry(Base):
    """Sample -> (shard, slice) for one version: the exact training set of each constituent."""

    __tablename__ = "manifest_entries"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer)
    slice: Mapped[int] = mapped_column(Integer)


class VersionShard(Base):
    """Progress and state of one constituent's training for one version."""

    __tablename__ = "version_shards"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ShardStatus.PENDING)
    # First slice trained for this version (== slices when the shard is reused whole).
    restart_slice: Mapped[int] = mapped_column(Integer)
    current_slice: Mapped[int | None] = mapped_column(Integer)
    slice_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    samples_trained: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("version_id", "shard", "slice", name="uq_ckpt_slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    shard: Mapped[int] = mapped_column(Integer)
    slice: Mapped[int] = mapped_column(Integer)
    # Content key in the model store: a hash chain over the recipe and the exact sample sets.
    key: Mapped[str] = mapped_column(String(64), index=True)
    # sha256 over the sorted sample hashes this checkpoint was trained on (slices 0..slice).
    sample_set_sha256: Mapped[str] = mapped_column(String(64))
    n_samples: Mapped[int] = mapped_column(Integer)
    reused: Mapped[bool] = mapped_column(Boolean)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    purged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A caller's key: only its sha256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, so a listing can tell keys apart without revealing them.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# At most one open request per (model, external_id), whoever sent it: the database refuses a
# concurrent duplicate that a check before the insert would let through.
_OPEN_EXTERNAL_ID = text(
    "external_id IS NOT NULL AND status IN ("
    + ", ".join(f"'{state.value}'" for state in OPEN_REQUEST_STATES)
    + ")"
)


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        Index("ix_requests_model_status", "model_id", "status"),
        Index(
            "uq_requests_open_external_id",
            "model_id",
            "external_id",
            unique=True,
            sqlite_where=_OPEN_EXTERNAL_ID,
            postgresql_where=_OPEN_EXTERNAL_ID,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    # The key that created the request: a requester sees only its own requests.
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    # "files" or "classes".
    target_kind: Mapped[str] = mapped_column(String(16))
    target_classes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    method: Mapped[str] = mapped_column(String(32))
    method_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    external_id: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the caller's key id and its Idempotency-Key header, never the header itself.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.RECEIVED)
    status_reason: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    result_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # Set on a request made for another model of the same dataset, so that a file erased for
    # the linked request is gone from every model: see app.services.shared_erasure.
    linked_to: Mapped[str | None] = mapped_column(
        ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    # Seconds per phase (queued, claim, retrain per shard, evaluation, audit, erasure, total),
    # written by the worker as each phase ends: see worker.flows.timings.
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    # Request options beyond the method's config (guard rails, targets, a reference run),
    # validated by the HTTP layer and read by the worker; {} means every default.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The deadline (received + the default or requested days); see app.services.lifecycle.
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # 1, then +1 per retry of a failed request (each attempt's events carry its number).
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeletionTarget(Base):
    """The samples one deletion request names (for class targets: the class's samples)."""

    __tablename__ = "deletion_targets"

    request_id: Mapped[str] = mapped_column(
        ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)


class Tombstone(Base):
    __tablename__ = "tombstones"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(ForeignKey("deletion_requests.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditReport(Base):
    __tablename__ = "audit_reports"

    id: Mapped[int] = mapped_column(primary_key=True)  # also the position in the hash chain
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    previous_sha256: Mapped[str | None] = mapped_column(String(64))
    # 1 for the genesis report, then +1 per report: lets a verifier see a dropped first report.
    sequence: Mapped[int | None] = mapped_column(Integer, unique=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON)
    html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
