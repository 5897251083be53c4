"""Deletion requests: validate and resolve the target, plan, and store before any work starts."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.methods import Target, get_method, validate_config
from app.core.methods.base import MethodSpec
from app.core.methods.reference import check_reference
from app.core.options import RequestOptions
from app.db.models import (
    DeletionRequest,
    DeletionTarget,
    Model,
    ModelStatus,
    ModelVersion,
    RequestStatus,
    Sample,
    SampleState,
)
from app.services import events, lifecycle, shared_erasure
from app.services.data_roots import MAX_LISTED, clip
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.models import get_model
from app.services.versions import load_placements
from app.services.weight_filters import check_filters_for
from app.sisa.planner import plan_deletion

MAX_FILENAMES = 10_000


def request_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _malformed(name: object) -> bool:
    if not isinstance(name, str) or not name or len(name) > 1000:
        return True
    if "\\" in name or "\x00" in name or name.startswith("/"):
        return True
    parts = name.split("/")
    return any(part in ("", ".", "..") for part in parts) or posixpath.normpath(name) != name


def _first_of_each(problems: dict[str, Any]) -> dict[str, Any]:
    """At most MAX_LISTED names per kind of problem, each clipped: never echo a huge body."""
    shown: dict[str, Any] = {}
    for key, value in problems.items():
        if isinstance(value, dict):
            shown[key] = {clip(k): v[:MAX_LISTED] for k, v in list(value.items())[:MAX_LISTED]}
        else:
            shown[key] = [clip(name) for name in value[:MAX_LISTED]]
    return shown


def resolve_filenames(session: Session, dataset_id: int, names: Sequence[str]) -> list[Sample]:
    """Resolve names to samples, or raise one error that lists every offending name.

    A name is a path relative to the dataset root (`train/cat/0001.jpg`), relative to a split
    folder (`cat/0001.jpg`), or a bare file name when exactly one sample has it.
    """
    if not names:
        raise InvalidInput("filenames must list at least one file")
    if len(names) > MAX_FILENAMES:
        raise InvalidInput(f"at most {MAX_FILENAMES} filenames per request, got {len(names)}")
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    duplicated = sorted(name for name, n in counts.items() if n > 1)
    malformed = sorted({str(name) for name in names if _malformed(name)})
    wanted = [name for name in counts if not _malformed(name)]
    lookups = set(wanted) | {f"{split}/{name}" for name in wanted for split in ("train", "test")}
    bare = [name for name in wanted if "/" not in name]
    rows = session.scalars(
        select(Sample).where(
            Sample.dataset_id == dataset_id,
            or_(Sample.rel_path.in_(sorted(lookups)), Sample.file_name.in_(bare)),
        )
    ).all()
    by_path = {s.rel_path: s for s in rows}
    by_name: dict[str, list[Sample]] = defaultdict(list)
    for sample in rows:
        by_name[str(sample.file_name)].append(sample)
    resolved: list[Sample] = []
    unknown: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    already_deleted: list[str] = []
    for name in wanted:
        if name in by_path:
            candidates = [by_path[name]]
        else:
            candidates = [by_path[p] for p in (f"train/{name}", f"test/{name}") if p in by_path]
            if not candidates and "/" not in name:
                candidates = by_name.get(name, [])
        if not candidates:
            unknown.append(name)
        elif len(candidates) > 1:
            ambiguous[name] = sorted(str(s.rel_path) for s in candidates)
        elif candidates[0].state != SampleState.ACTIVE:
            already_deleted.append(name)
        else:
            resolved.append(candidates[0])
    problems = {
        key: value
        for key, value in {
            "malformed": malformed,
            "duplicated": duplicated,
            "unknown": sorted(unknown),
            "ambiguous": ambiguous,
            "already_deleted": sorted(already_deleted),
        }.items()
        if value
    }
    if problems:
        summary = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in problems.items())
        error_cls = Conflict if set(problems) == {"already_deleted"} else InvalidInput
        raise error_cls(
            f"filenames refused: {summary}",
            invalid_filenames=_first_of_each(problems),
            invalid_filename_counts={key: len(value) for key, value in problems.items()},
        )
    return resolved


def _options(raw: object) -> RequestOptions:
    try:
        return RequestOptions.model_validate(raw or {})
    except ValidationError as exc:
        raise InvalidInput(
            "options are not valid", errors=json.loads(exc.json(include_url=False))
        ) from None


def with_identical_copies(
    session: Session, dataset_id: int, named: Sequence[Sample]
) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Forget content, not a path: every active sample of the dataset whose bytes equal a named
    file's joins the target. Returns the samples and, per hash that gained copies, how many
    (hashes and counts only: the extra copies' names never leave the database)."""
    hashes = sorted({s.sha256 for s in named})
    if not hashes:
        return list(named), []
    copies = session.scalars(
        select(Sample)
        .where(
            Sample.dataset_id == dataset_id,
            Sample.sha256.in_(hashes),
            Sample.state == SampleState.ACTIVE,
        )
        .order_by(Sample.id)
    ).all()
    known = {s.id for s in named}
    extra = [s for s in copies if s.id not in known]
    added: dict[str, int] = defaultdict(int)
    for sample in extra:
        added[sample.sha256] += 1
    listed = [{"sha256": sha, "extra_copies": n} for sha, n in sorted(added.items())]
    return [*named, *extra], listed


def _class_targets(
    session: Session, model: Model, version: ModelVersion, class_names: Sequence[str]
) -> tuple[list[str], list[Sample]]:
    classes = model.dataset.classes
    unknown = sorted(set(class_names) - set(classes))
    if unknown:
        raise InvalidInput(f"unknown classes {unknown}; the dataset has {classes}")
    if len(set(class_names)) != len(class_names):
        raise InvalidInput("class names are repeated")
    retired = sorted(set(class_names) & set(version.retired_classes))
    if retired:
        raise Conflict(f"classes already forgotten by this model: {retired}")
    if len(set(class_names) | set(version.retired_classes)) >= len(classes):
        raise InvalidInput("a model must keep at least one class")
    indices = [classes.index(name) for name in class_names]
    samples = session.scalars(
        select(Sample).where(
            Sample.dataset_id == model.dataset_id,
            Sample.class_index.in_(indices),
            Sample.state == SampleState.ACTIVE,
        )
    ).all()
    return list(class_names), list(samples)


def _replay(session: Session, idempotency_key: str, fingerprint: str) -> DeletionRequest | None:
    """The request stored earlier under ``idempotency_key``, if any (same body, or a 422)."""
    existing = session.scalar(
        select(DeletionRequest).where(DeletionRequest.idempotency_key == idempotency_key)
    )
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise InvalidInput("Idempotency-Key was already used with a different request body")
    return existing


def _choose_method(name: str, target: Target, default_class_method: str) -> MethodSpec:
    """The request's method; ``auto`` stays exact for files (sisa: on a monolithic or imported
    model, a full retrain) and approximate methods are only ever chosen explicitly."""
    if name == "auto":
        name = "sisa" if target == Target.FILES else default_class_method
    try:
        method = get_method(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if target not in method.targets:
        raise InvalidInput(
            f"method {method.name!r} cannot forget {target.value}; it supports "
            f"{sorted(t.value for t in method.targets)}"
        )
    return method


def _plan(
    session: Session,
    model: Model,
    version: ModelVersion,
    samples: Sequence[Sample],
    *,
    full_retrain: bool,
) -> dict[str, Any]:
    plan = plan_deletion(
        load_placements(session, version.id),
        [s.id for s in samples],
        shards=model.recipe.shards,
        slices=model.recipe.slices,
        full_retrain=full_retrain,
    )
    return {**plan.to_dict(), "samples": len(samples)}


def _resolve_target(
    session: Session,
    model: Model,
    version: ModelVersion,
    filenames: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> tuple[list[Sample], list[str], list[dict[str, Any]]]:
    """(samples, retired classes, identical copies added) for a file or a class target."""
    if filenames is not None:
        named = resolve_filenames(session, model.dataset_id, filenames)
        samples, identical_copies = with_identical_copies(session, model.dataset_id, named)
        return samples, [], identical_copies
    assert class_names is not None
    retired, class_samples = _class_targets(session, model, version, class_names)
    # Content, not a label: a byte-identical copy filed under a kept class is the same image.
    samples, identical_copies = with_identical_copies(session, model.dataset_id, class_samples)
    return samples, retired, identical_copies


def create_deletion_request(
    session: Session,
    *,
    payload: dict[str, Any],
    idempotency_key: str | None,
    default_class_method: str,
    owner_key_id: int | None = None,
) -> tuple[DeletionRequest, bool]:
    """Validate, resolve and store a request with its plan. Returns (request, created)."""
    fingerprint = request_fingerprint(payload)
    if idempotency_key:
        existing = _replay(session, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    model = get_model(session, payload["model"])
    if model.status != ModelStatus.READY or model.current_version_id is None:
        raise Conflict(f"model {model.name!r} is {model.status}; deletions need a ready model")
    version = session.get(ModelVersion, model.current_version_id)
    assert version is not None
    filenames = payload.get("filenames")
    class_names = payload.get("class_names") or (
        [payload["class_name"]] if payload.get("class_name") else None
    )
    if (filenames is None) == (class_names is None):
        raise InvalidInput("give either filenames or class_name/class_names, not both or neither")
    target = Target.FILES if filenames is not None else Target.CLASSES
    method = _choose_method(payload.get("method") or "auto", target, default_class_method)
    config = _method_config(method.name, payload.get("method_config"))
    options = _options(payload.get("options"))
    try:
        check_reference(
            options.reference,
            exact=method.exact,
            shards=model.recipe.shards,
            slices=model.recipe.slices,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    samples, retired, identical_copies = _resolve_target(
        session, model, version, filenames, class_names
    )
    if method.uses_weight_filters:
        check_filters_for(session, model, version, retired)
    request = DeletionRequest(
        model_id=model.id,
        owner_key_id=owner_key_id,
        target_kind=target.value,
        target_classes=retired,
        method=method.name,
        method_config=config.model_dump(mode="json"),
        # Stored with every default filled in, so the request shows what applies to it.
        options=options.model_dump(mode="json"),
        external_id=payload.get("external_id"),
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        status=RequestStatus.RECEIVED,
        plan={
            **_plan(session, model, version, samples, full_retrain=method.name == "retrain"),
            "exact": method.exact,
            "identical_copies": identical_copies,
        },
        base_version_id=version.id,
    )
    stored = _store(session, request)
    if stored is not request:
        return stored, False
    session.add_all(DeletionTarget(request_id=request.id, sample_id=s.id) for s in samples)
    return request, True


def _store(session: Session, request: DeletionRequest) -> DeletionRequest:
    """Insert ``request``; or, when a concurrent call with the same Idempotency-Key stored its
    request first (the unique key refuses this one), that call's request, as a replay. An open
    request of the model with the same external_id (the partial unique index) is a 409."""
    session.add(request)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        key, fingerprint = request.idempotency_key, request.request_fingerprint
        existing = _replay(session, key, fingerprint) if key else None
        if existing is not None:
            return existing
        conflict = lifecycle.duplicate_conflict(session, request)
        if conflict is None:
            raise
        raise conflict from None
    return request


def _method_config(method: str, raw: dict[str, Any] | None) -> Any:
    """The validated configuration, or a 422 naming each bad field."""
    try:
        return validate_config(method, raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"method_config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:20]
        )
        raise InvalidInput(
            f"method_config is not valid for {method!r}: {fields}",
            errors=exc.errors(include_url=False, include_context=False),
        ) from None


def get_request(
    session: Session, request_id: str, *, owner_key_id: int | None = None
) -> DeletionRequest:
    """A request by id; with ``owner_key_id``, only that key's own (others' do not exist)."""
    request = session.get(DeletionRequest, request_id)
    if request is None or (owner_key_id is not None and request.owner_key_id != owner_key_id):
        raise NotFound(f"deletion request {request_id[:100]!r} does not exist")
    return request


def list_requests(
    session: Session,
    *,
    status: str | None,
    model: str | None,
    limit: int,
    offset: int,
    owner_key_id: int | None = None,
    overdue: bool | None = None,
    sort: str | None = None,
) -> tuple[list[DeletionRequest], int]:
    query = select(DeletionRequest)
    if owner_key_id is not None:
        query = query.where(DeletionRequest.owner_key_id == owner_key_id)
    if status:
        valid = {s.value for s in RequestStatus}
        if status not in valid:
            raise InvalidInput(f"unknown status {status!r}; one of {sorted(valid)}")
        query = query.where(DeletionRequest.status == status)
    if model:
        query = query.where(DeletionRequest.model_id == get_model(session, model).id)
    query = lifecycle.filter_and_sort(query, overdue=overdue, sort=sort)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    return list(rows), total


def cancel_request(session: Session, request: DeletionRequest) -> None:
    """Cancel a request no worker has claimed; a conditional UPDATE so a claim cannot race it.
    A linked request goes with the request it serves (cancelling it alone would keep the
    files of that request forever)."""
    if request.linked_to is not None:
        raise Conflict(
            f"this request erases the data of request {request.linked_to} from another model; "
            "cancel that request instead"
        )
    result = session.execute(
        update(DeletionRequest)
        .where(
            DeletionRequest.id == request.id,
            DeletionRequest.status.in_(
                (RequestStatus.PENDING_APPROVAL, RequestStatus.RECEIVED, RequestStatus.QUEUED)
            ),
        )
        .values(
            status=RequestStatus.CANCELLED,
            status_reason="cancelled by the caller before work started",
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.refresh(request)
        raise Conflict(
            f"request is {request.status}; only pending_approval, received or queued ones can "
            "be cancelled"
        )
    session.refresh(request)
    events.record(session, request, "cancelled")
    shared_erasure.follow(
        session,
        request,
        "cancelled",
        before=(RequestStatus.PENDING_APPROVAL, RequestStatus.RECEIVED, RequestStatus.QUEUED),
        after=RequestStatus.CANCELLED,
        reason=f"cancelled with request {request.id}",
    )


def target_hashes(session: Session, request_id: str) -> list[str]:
    return sorted(
        session.scalars(
            select(Sample.sha256)
            .join(DeletionTarget, DeletionTarget.sample_id == Sample.id)
            .where(DeletionTarget.request_id == request_id)
        ).all()
    )
