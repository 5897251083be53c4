"""The lifecycle routes of a deletion request (approve, deny, retry, events) and the
approval policy of a model."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.auth import Operate, ReadRequests
from app.api.deps import SessionDep
from app.api.routers.deletions import deletion_out
from app.api.routers.models import model_out
from app.api.schemas import DeletionOut, ModelOut
from app.api.workflow_schemas import Decision, Denial, EventOut, EventsOut, ModelPolicy
from app.queue import enqueue_deletion
from app.services import deletions as service
from app.services import lifecycle, shared_erasure
from app.services.api_keys import owner_scope
from app.services.models import get_model

router = APIRouter(tags=["compliance workflow"])
REQUEST = "/v1/deletion-requests/{request_id}"


@router.post(f"{REQUEST}/approve", response_model=DeletionOut)
def approve(
    request_id: str, session: SessionDep, caller: Operate, body: Decision | None = None
) -> DeletionOut:
    """A request waiting in pending_approval goes to work."""
    request = service.get_request(session, request_id)
    lifecycle.approve(session, request, caller, (body or Decision()).reason)
    session.commit()
    enqueue_deletion(session, request)
    for linked in shared_erasure.linked_requests(session, request):
        enqueue_deletion(session, linked)
    session.refresh(request)
    return deletion_out(session, request, caller)


@router.post(f"{REQUEST}/deny", response_model=DeletionOut)
def deny(request_id: str, body: Denial, session: SessionDep, caller: Operate) -> DeletionOut:
    """Final: the request never runs and keeps the reason."""
    request = service.get_request(session, request_id)
    lifecycle.deny(session, request, caller, body.reason)
    session.commit()
    return deletion_out(session, request, caller)


@router.post(f"{REQUEST}/retry", response_model=DeletionOut, status_code=202)
def retry(request_id: str, session: SessionDep, caller: Operate) -> DeletionOut:
    """A new attempt of a failed request, under the same id."""
    request = service.get_request(session, request_id)
    lifecycle.retry(session, request, caller)
    session.commit()
    enqueue_deletion(session, request)
    session.refresh(request)
    return deletion_out(session, request, caller)


@router.get(f"{REQUEST}/events", response_model=EventsOut)
def list_events(request_id: str, session: SessionDep, caller: ReadRequests) -> EventsOut:
    request = service.get_request(session, request_id, owner_key_id=owner_scope(caller))
    return EventsOut(
        request_id=request.id,
        status=request.status,
        attempt=request.attempt or 1,
        events=[EventOut(**item) for item in lifecycle.timeline(session, request)],
    )


@router.patch("/v1/models/{model_ref}", response_model=ModelOut)
def update_model_policy(
    model_ref: str, body: ModelPolicy, session: SessionDep, caller: Operate
) -> ModelOut:
    """Change a model's approval policy (requests already received keep their state)."""
    model = get_model(session, model_ref)
    if body.require_approval is not None:
        model.require_approval = body.require_approval
    session.commit()
    return model_out(session, model)
