"""Webhook subscriptions and their deliveries (operators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.auth import Operate
from app.api.deps import SessionDep, SettingsDep
from app.api.workflow_schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut
from app.db.workflow import Webhook
from app.services import webhooks as service

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _out(hook: Webhook) -> WebhookOut:
    return WebhookOut(id=hook.id, url=hook.url, events=hook.events, created_at=hook.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(
    body: WebhookCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: Operate,
) -> WebhookCreated:
    hook = service.create_webhook(
        session,
        url=body.url,
        event_types=body.events,
        secret=body.secret,
        allowed=settings.webhook_allowed_hosts,
    )
    session.commit()
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(**_out(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(session: SessionDep, caller: Operate) -> list[WebhookOut]:
    return [_out(hook) for hook in service.list_webhooks(session)]


@router.delete("/{webhook_id}", response_model=WebhookOut)
def delete_webhook(webhook_id: int, session: SessionDep, caller: Operate) -> WebhookOut:
    hook = service.delete_webhook(session, webhook_id)
    session.commit()
    return _out(hook)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    webhook_id: int,
    session: SessionDep,
    caller: Operate,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DeliveryOut]:
    rows = service.list_deliveries(session, webhook_id, limit=limit, offset=offset)
    return [DeliveryOut.model_validate(row, from_attributes=True) for row in rows]


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut)
def redeliver(
    webhook_id: int, delivery_id: int, session: SessionDep, caller: Operate
) -> DeliveryOut:
    delivery = service.redeliver(session, webhook_id, delivery_id)
    session.commit()
    return DeliveryOut.model_validate(delivery, from_attributes=True)
