from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select

from app.api.auth import CancelRequests, ReadRequests, SubmitRequests
from app.api.deps import SessionDep, SettingsDep
from app.api.inputs import MAX_OFFSET, Text, path_ref
from app.api.schemas import DeletionCreate, DeletionOut, DeletionPage
from app.db.models import AuditReport, DeletionRequest, Model, ModelVersion, RequestStatus
from app.queue import enqueue_deletion
from app.services import deletions as service
from app.services import lifecycle, shared_erasure
from app.services.api_keys import Principal, idempotency_token, owner_scope
from app.services.errors import NotFound
from app.services.progress import version_progress

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])


def deletion_out(session: SessionDep, request: DeletionRequest, caller: Principal) -> DeletionOut:
    numbers: dict[int | None, int] = dict(
        session.execute(
            select(ModelVersion.id, ModelVersion.number).where(
                ModelVersion.id.in_(
                    [v for v in (request.base_version_id, request.result_version_id) if v]
                )
            )
        ).all()
    )
    percent = 100.0 if request.status == RequestStatus.COMPLETED else 0.0
    progress: dict[str, object] = {"phase": request.status, "percent": percent}
    if request.status == RequestStatus.RUNNING and request.result_version_id:
        version = session.get(ModelVersion, request.result_version_id)
        if version is not None:
            slices = request.plan.get("slices", 1)
            progress = {**version_progress(session, version, slices), "phase": "retraining"}
    elif request.status == RequestStatus.VERIFYING:
        # Its own batch is over: it waits for other models of the dataset to forget its files.
        batch = session.scalar(select(Model.active_batch).where(Model.id == request.model_id))
        waiting = batch != request.batch_id
        progress = {"phase": "waiting_for_other_models" if waiting else "auditing", "percent": 99.0}
    has_report = request.status == RequestStatus.COMPLETED and session.scalar(
        select(AuditReport.id).where(AuditReport.request_id == request.id)
    )
    return DeletionOut(
        id=request.id,
        model=request.model_id,
        status=request.status,
        status_reason=request.status_reason,
        progress=progress,
        plan=request.plan,
        method=request.method,
        method_config=request.method_config,
        options=request.options or {},
        target={
            "kind": request.target_kind,
            "classes": request.target_classes,
            "samples": request.plan.get("samples"),
        },
        # Often an e-mail address or a ticket: only for its owner and the staff roles.
        external_id=request.external_id if caller.may_see_external_id(request) else None,
        timings=request.timings or {},
        base_version=numbers.get(request.base_version_id),
        result_version=numbers.get(request.result_version_id),
        report_url=f"/v1/deletion-requests/{request.id}/report" if has_report else None,
        created_at=request.created_at,
        updated_at=request.updated_at,
        completed_at=request.completed_at,
        **lifecycle.public_fields(session, request),
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=DeletionOut)
def create_deletion_request(
    body: DeletionCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: SubmitRequests,
    idempotency_key: Annotated[Text | None, Header(max_length=200)] = None,
) -> DeletionOut:
    request, created = service.create_deletion_request(
        session,
        payload=body.model_dump(exclude_none=True),
        idempotency_key=idempotency_token(caller, idempotency_key),
        default_class_method=settings.default_class_method,
        owner_key_id=caller.key_id,
    )
    response.headers["Location"] = f"/v1/deletion-requests/{request.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
        return deletion_out(session, request, caller)
    # The answer is built before the commit, and the request enqueued only after it: a worker
    # never sees a request that could still roll back, and once the request is stored nothing
    # can turn its answer into an error (a failed enqueue leaves it "received" for the sweep).
    lifecycle.admit_new_request(
        session,
        request,
        deadline_days=body.deadline_days,
        default_days=settings.default_deadline_days,
    )
    linked = shared_erasure.link_other_models(session, request)
    stored = deletion_out(session, request, caller)
    session.commit()
    if enqueue_deletion(session, request):
        stored.status = RequestStatus.QUEUED
        stored.progress = {**stored.progress, "phase": RequestStatus.QUEUED}
    for other in linked:
        enqueue_deletion(session, other)
    return stored


@router.get("", response_model=DeletionPage)
def list_deletion_requests(
    session: SessionDep,
    caller: ReadRequests,
    status_filter: Annotated[str | None, Query(alias="status", max_length=32)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    overdue: bool | None = None,
    sort: Annotated[str | None, Query(max_length=20)] = None,
) -> DeletionPage:
    rows, total = service.list_requests(
        session,
        status=status_filter,
        model=path_ref("model", model) if model else None,
        limit=limit,
        offset=offset,
        owner_key_id=owner_scope(caller),
        overdue=overdue,
        sort=sort,
    )
    return DeletionPage(
        items=[deletion_out(session, r, caller) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{request_id}", response_model=DeletionOut)
def read_deletion_request(
    request_id: str, session: SessionDep, caller: ReadRequests
) -> DeletionOut:
    request = service.get_request(session, request_id, owner_key_id=owner_scope(caller))
    return deletion_out(session, request, caller)


@router.post("/{request_id}/cancel", response_model=DeletionOut)
def cancel_deletion_request(
    request_id: str, session: SessionDep, caller: CancelRequests
) -> DeletionOut:
    request = service.get_request(session, request_id, owner_key_id=owner_scope(caller))
    service.cancel_request(session, request)
    session.commit()
    return deletion_out(session, request, caller)


@router.get(
    "/{request_id}/report",
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
)
def read_report(
    request_id: str, session: SessionDep, request: Request, caller: ReadRequests
) -> Response:
    deletion = service.get_request(session, request_id, owner_key_id=owner_scope(caller))
    report = session.scalar(select(AuditReport).where(AuditReport.request_id == deletion.id))
    if report is None:
        raise NotFound(
            f"deletion request {request_id!r} has no report yet (status: {deletion.status})"
        )
    accept = request.headers.get("accept", "")
    if "text/html" in accept and report.html:
        return HTMLResponse(report.html)
    return JSONResponse(report.envelope)
