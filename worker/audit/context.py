"""What the audit of one request reads once: the request, both versions, the model, the targets;
and the report sections that only describe them (request, method, versions).

Privacy: targets are carried as sample ids, content hashes, classes and splits; file paths are
not read here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import DeletionRequest, DeletionTarget, Model, ModelVersion, Sample, as_utc
from worker.unlearning.registry import get_method

__all__ = [
    "AuditContext",
    "Target",
    "aware",
    "error_kind",
    "load_context",
    "method_section",
    "request_section",
    "request_seed",
    "versions_section",
]


@dataclass(frozen=True)
class Target:
    """One sample the request deletes."""

    sample_id: int
    sha256: str
    class_index: int
    split: str


@dataclass
class AuditContext:
    """Everything about the request that the sections need, read once."""

    request: DeletionRequest
    version: ModelVersion
    parent: ModelVersion
    model: Model
    classes: list[str]
    exact: bool
    targets: list[Target]
    seed: int
    # Findings of the measurements that the report states in its notes.
    notes: list[str] = field(default_factory=list)

    @property
    def is_class_target(self) -> bool:
        return self.request.target_kind == "classes"

    @property
    def slices(self) -> int:
        return self.model.recipe.slices

    @property
    def shards(self) -> int:
        return self.model.recipe.shards

    def target_hashes(self) -> list[str]:
        return sorted({t.sha256.lower() for t in self.targets})


def aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


def error_kind(exc: BaseException) -> str:
    """The exception's type only: messages can carry file paths, which must not be reported."""
    return type(exc).__name__


def request_seed(target_hashes: Sequence[str]) -> int:
    """A stable 31-bit seed from what is forgotten (not from ids): the same request on the same
    data samples the same subsets and draws the same attack folds in any deployment, so its
    report can be compared with a retrain's number for number."""
    digest = hashlib.sha256("\n".join(sorted(target_hashes)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def load_context(session: Session, request: DeletionRequest, version: ModelVersion) -> AuditContext:
    model = session.get(Model, version.model_id)
    assert model is not None
    parent_id = version.parent_id or request.base_version_id
    parent = session.get(ModelVersion, parent_id) if parent_id is not None else None
    if parent is None:
        raise ValueError(f"version {version.id} has no parent version to audit against")
    targets = [
        Target(sid, sha, cls, split)
        for sid, sha, cls, split in session.execute(
            select(Sample.id, Sample.sha256, Sample.class_index, Sample.split)
            .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
            .where(DeletionTarget.request_id == request.id)
            .order_by(Sample.sha256, Sample.id)
        ).all()
    ]
    return AuditContext(
        request=request,
        version=version,
        parent=parent,
        model=model,
        classes=list(model.dataset.classes),
        exact=bool(get_method(version.method).exact),
        targets=targets,
        seed=request_seed([t.sha256.lower() for t in targets]),
    )


# --------------------------------------------------------------------------- descriptive sections


def request_section(ctx: AuditContext) -> dict[str, Any]:
    request, classes = ctx.request, ctx.classes
    counts = Counter(classes[t.class_index] for t in ctx.targets)
    names = list(request.target_classes or [])
    return {
        "id": request.id,
        "external_id": request.external_id,
        "model_id": ctx.model.id,
        "model_name": ctx.model.name,
        "created_at": aware(request.created_at),
        "started_at": aware(ctx.version.started_at),
        "completed_at": aware(ctx.version.completed_at),
        "target": {
            "kind": "class" if ctx.is_class_target else "samples",
            "sample_sha256": ctx.target_hashes(),
            "n_samples": len(ctx.targets),
            "counts_by_class": {c: counts[c] for c in classes if counts[c]},
            "class_names": names or None,
            "class_indices": [classes.index(c) for c in names] or None,
        },
        "coalesced_with": list(request.plan.get("coalesced_with") or []),
    }


def method_section(ctx: AuditContext) -> dict[str, Any]:
    spec = get_method(ctx.version.method)
    return {
        "name": spec.name,
        "exact": bool(spec.exact),
        "description": spec.summary,
        "parameters": dict(ctx.request.method_config or {}),
        "paper": spec.paper,
        # every attempt of a class request (verify, then escalate), with its validation figures
        "attempts": list(ctx.request.plan.get("attempts") or []),
    }


def _version_ref(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": version.id,
        "number": version.number,
        "manifest_sha256": version.manifest_sha256,
        "created_at": aware(version.completed_at or version.started_at),
        "method": version.method,
    }


def versions_section(ctx: AuditContext) -> dict[str, Any]:
    return {
        "model_id": ctx.model.id,
        "architecture": ctx.model.architecture,
        "before": _version_ref(ctx.parent),
        "after": _version_ref(ctx.version),
        "shards": ctx.shards,
        "slices": ctx.slices,
        "aggregation": ctx.model.recipe.aggregation,
    }
