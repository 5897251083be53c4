"""The audit report body, version 1 (``forgetd.audit-report/v1``), as pydantic v2 models.

These models document and validate the *body* that :func:`app.audit.integrity.seal_report`
wraps in a signed envelope. The worker builds the body with
:func:`worker.audit.builder.build_report_body`, which validates it here and returns plain JSON
types.

Privacy rule: the request section identifies deleted data only by the sha256 of the samples'
bytes and by counts, never by file names or paths; the request model refuses unknown fields so
that a file name cannot slip in by accident.

Sections whose content depends on the method (efficacy, membership inference, cost) accept
additional fields, so a method can add its own metrics without a schema change. Every numeric
value must be finite (NaN and Infinity are not JSON).

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "AccuracyTriple",
    "AttackResultModel",
    "ConstituentLineage",
    "CostSection",
    "EfficacySection",
    "LineageSection",
    "MembershipInferenceSection",
    "MethodSection",
    "MiaVerdict",
    "ReferenceModelTest",
    "ReportBody",
    "RequestSection",
    "TargetSection",
    "VersionRef",
    "VersionsSection",
    "report_json_schema",
]

REPORT_SCHEMA_VERSION = "forgetd.audit-report/v1"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Sha256Hex = str  # 64 lower-case hex characters; checked by validators below


def _check_sha(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("must be a sha256 hex digest (64 lower-case hex characters)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# --------------------------------------------------------------------------- request


class TargetSection(_Strict):
    """What was forgotten, identified by content hashes and counts only."""

    kind: Literal["samples", "class"] = Field(
        description="'samples' for a file deletion, 'class' for forgetting a whole class"
    )
    sample_sha256: list[Sha256Hex] = Field(
        default_factory=list,
        description="sha256 of the bytes of every deleted sample, sorted (may be long for a class)",
    )
    n_samples: int = Field(ge=0, description="number of deleted samples")
    counts_by_class: dict[str, int] | None = Field(
        None, description="deleted samples per class label"
    )
    class_names: list[str] | None = Field(
        None, description="forgotten class label(s), for class forgetting"
    )
    class_indices: list[int] | None = Field(
        None, description="model output indices of the forgotten class(es)"
    )

    @field_validator("sample_sha256")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for h in value:
            _check_sha(h)
        return value


class RequestSection(_Strict):
    """The deletion request this report closes (no file names)."""

    id: int | str = Field(description="deletion request id")
    external_id: str | None = Field(None, description="the caller's own reference")
    model_id: int | str | None = None
    model_name: str | None = None
    created_at: datetime = Field(description="when the request was received")
    started_at: datetime | None = Field(None, description="when the worker started the work")
    completed_at: datetime | None = Field(None, description="when the unlearning finished")
    target: TargetSection
    coalesced_with: list[int | str] = Field(
        default_factory=list,
        description="other request ids served by the same retrain (each has its own report)",
    )


# --------------------------------------------------------------------------- method, versions


class MethodSection(_Open):
    name: str = Field(description="registered method name: sisa, retrain, unsir, adversarial, ...")
    exact: bool = Field(
        description="True when the resulting model provably never saw the deleted data"
    )
    description: str | None = None
    requested: str | None = Field(None, description="what the caller asked for, e.g. 'auto'")
    parameters: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters used")


class VersionRef(_Open):
    id: int | str
    number: int | None = Field(None, description="version number within the model")
    manifest_sha256: Sha256Hex | None = None
    created_at: datetime | None = None

    @field_validator("manifest_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return None if value is None else _check_sha(value)


class VersionsSection(_Open):
    model_id: int | str | None = None
    architecture: str | None = None
    before: VersionRef = Field(description="the version that served before the deletion")
    after: VersionRef | None = Field(None, description="the version created by the deletion")


# --------------------------------------------------------------------------- lineage


class ConstituentLineage(_Strict):
    shard: int = Field(ge=0)
    sample_set_sha256: Sha256Hex = Field(
        description="hash of the sorted sample hashes this constituent was trained on, "
        "recomputed from the manifest"
    )
    n_samples: int = Field(ge=0)
    retrained_from_slice: int | None = Field(
        None, description="slice the shard restarted from; null when the shard was untouched"
    )
    reused_checkpoints: list[str] = Field(default_factory=list)
    new_checkpoints: list[str] = Field(default_factory=list)
    contains_deleted: list[Sha256Hex] = Field(
        default_factory=list, description="deleted sample hashes found in this constituent"
    )

    @field_validator("sample_set_sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        return _check_sha(value)


class BackboneLineage(_Open):
    name: str
    architecture: str
    sha256: Sha256Hex
    trained_on: str = Field(description="the public data the fixed backbone was trained on")
    head: str
    tune: str
    statement: str


class LineageSection(_Open):
    exact: bool
    verified: bool = Field(
        description="True only for an exact method whose constituents contain no deleted sample"
    )
    status: Literal["verified", "failed", "not_applicable"]
    statement: str
    deleted_sample_count: int | None = None
    constituents: list[ConstituentLineage] | None = None
    retrained_shards: list[int] | None = None
    retrained_from_slice: dict[str, int] | None = Field(
        None, description="shard (as a string key) -> slice it restarted from"
    )
    n_reused_checkpoints: int | None = None
    n_new_checkpoints: int | None = None
    violations: list[dict[str, Any]] | None = Field(
        None, description="(shard, deleted hash) pairs that break the proof"
    )
    backbone: BackboneLineage | None = Field(
        None, description="for heads on a fixed backbone: which one, and that it is fixed"
    )


# --------------------------------------------------------------------------- efficacy


class AccuracyTriple(_Open):
    before: float | None = None
    after: float | None = None
    retrain: float | None = Field(None, description="a full retrain without the data, if run")
    n: int | None = Field(None, description="number of samples evaluated")


class EfficacySection(_Open):
    forget: AccuracyTriple | None = Field(None, description="accuracy on the deleted samples")
    retain: AccuracyTriple | None = Field(None, description="accuracy on the kept training data")
    test: AccuracyTriple | None = Field(None, description="accuracy on the held-out test set")
    per_class: dict[str, AccuracyTriple] | None = Field(
        None, description="class label -> test accuracy before / after / retrain"
    )
    forget_prediction_distribution: dict[str, dict[str, float]] | None = Field(
        None,
        description="'before' / 'after' / 'retrain' -> class label -> fraction of the forgotten "
        "samples predicted as that class",
    )
    relearn_epochs: float | None = Field(
        None, description="epochs of fine-tuning on the forget set to regain its accuracy"
    )
    weight_distance: dict[str, Any] | None = Field(
        None, description="layer-wise distance to the original and to a retrained model"
    )
    retrain_comparison: dict[str, Any] | None = None
    method_metrics: dict[str, Any] | None = Field(
        None, description="method-specific numbers (e.g. discriminator score)"
    )


# --------------------------------------------------------------------------- membership inference


class AttackResultModel(_Open):
    attack: str
    auc: float | None
    auc_ci: tuple[float | None, float | None]
    advantage: float | None
    advantage_ci: tuple[float | None, float | None]
    tpr_at_1pct_fpr: float | None
    tpr_ci: tuple[float | None, float | None]
    n_members: int
    n_nonmembers: int
    roc: dict[str, list[float]] = Field(description="fpr and tpr lists, at most 101 points")
    interpretation: str
    details: dict[str, Any] = Field(default_factory=dict)


class AttackStages(_Open):
    before: AttackResultModel | None = None
    after: AttackResultModel | None = None
    retrain: AttackResultModel | None = None


class MiaVerdict(_Open):
    attack: str
    status: Literal[
        "indistinguishable",
        "residual_signal",
        "over_forgetting",
        "consistent_with_retrain",
        "differs_from_retrain",
        "inconclusive",
    ]
    text: str


class ReferenceModelTest(_Open):
    test: str = "reference_model_percentile"
    n_samples: int
    n_reference_models: int
    fraction_flagged: float | None
    expected_fraction_flagged: float | None
    mean_percentile: float | None
    median_percentile: float | None = None
    mean_z: float | None = None
    status: Literal["indistinguishable", "residual_signal", "over_forgetting"] | None = None
    interpretation: str


class MembershipInferenceSection(_Open):
    members: str = Field("forget set", description="which samples the attacks treat as members")
    nonmembers: str = Field("held-out test set", description="the non-member comparison set")
    attacks: dict[str, AttackStages] = Field(default_factory=dict)
    reference_model_test: ReferenceModelTest | None = None
    verdicts: list[MiaVerdict] = Field(default_factory=list)
    interpretation: str | None = None


# --------------------------------------------------------------------------- cost


class CostSection(_Open):
    wall_time_s: float | None = Field(None, ge=0)
    samples_retrained: int | None = Field(
        None, ge=0, description="sample-epochs (or samples) trained by this unlearning"
    )
    shards_retrained: int | None = Field(None, ge=0)
    slices_retrained: int | None = Field(None, ge=0)
    full_retrain_samples: int | None = Field(
        None, ge=0, description="the same quantity for a full retrain"
    )
    full_retrain_wall_time_s_estimate: float | None = Field(None, ge=0)
    speedup: float | None = Field(None, ge=0, description="full retrain cost / this cost")
    device: str | None = None


# --------------------------------------------------------------------------- the body


class ReportBody(_Strict):
    """Body of a ``forgetd.audit-report/v1`` report (what the envelope's ``report`` holds)."""

    generated_at: datetime | None = None
    request: RequestSection
    method: MethodSection
    versions: VersionsSection
    lineage: LineageSection
    efficacy: EfficacySection
    membership_inference: MembershipInferenceSection
    cost: CostSection
    notes: list[str] = Field(default_factory=list)


def report_json_schema() -> dict:
    """JSON Schema of the report body (for docs and for consumers)."""
    schema = ReportBody.model_json_schema()
    schema["$id"] = REPORT_SCHEMA_VERSION
    schema.setdefault(
        "description",
        "Body of a forgetd audit report; signed inside an envelope {schema, report, integrity}.",
    )
    return schema
