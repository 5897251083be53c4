"""Bodies of the compliance workflow's routes: decisions, events, model policy, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=1000)


class Denial(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, description="kept with the request")


class EventOut(BaseModel):
    id: int | None
    kind: str
    status: str
    attempt: int
    detail: dict[str, Any]
    at: datetime


class EventsOut(BaseModel):
    request_id: str
    status: str
    attempt: int
    events: list[EventOut]


class ModelPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_approval: bool | None = None


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    secret: str | None = Field(
        None,
        min_length=24,
        max_length=200,
        description="whsec_<base64 of 24-64 bytes>; generated when absent",
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret: shown only in this response")


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    request_id: str
    event_type: str
    state: str
    tries: int
    last_status_code: int | None
    last_error: str | None
    next_try_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
