"""Small helpers shared by the flows."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import torch
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db.models import Model, as_utc
from app.settings import Settings, get_settings
from models_store import LocalStore
from worker.device import resolve_device

log = logging.getLogger("forgetd.worker")


def now() -> datetime:
    return datetime.now(UTC)


def is_stale(moment: datetime | None, seconds: float) -> bool:
    if moment is None:
        return True
    return now() - as_utc(moment) > timedelta(seconds=seconds)


@lru_cache(maxsize=1)
def store() -> LocalStore:
    root = get_settings().store_root
    assert root is not None
    return LocalStore(root)


def device(settings: Settings | None = None) -> torch.device:
    return resolve_device((settings or get_settings()).device)


def touch_model(session: Session, model_id: int) -> None:
    session.execute(update(Model).where(Model.id == model_id).values(heartbeat_at=now()))
