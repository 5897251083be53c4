"""A model's per-class weight filters (operators): train them, follow the job, read their
accuracy table. ``method: "weight_filtering"`` deletion requests apply them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import Operate
from app.api.deps import SessionDep
from app.api.inputs import path_ref
from app.core.methods.weight_filtering import FilterTrainingConfig
from app.queue import enqueue_filters
from app.services import weight_filters as service
from app.services.models import get_model

router = APIRouter(prefix="/v1/models", tags=["weight filters"])


class FiltersCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: FilterTrainingConfig = Field(
        default_factory=FilterTrainingConfig,
        description="how the filters are trained; every field has a default",
    )


@router.post("/{model_ref}/filters", status_code=status.HTTP_202_ACCEPTED)
def train_filters(
    model_ref: str,
    session: SessionDep,
    response: Response,
    caller: Operate,
    body: FiltersCreate | None = None,
) -> dict[str, Any]:
    """Train per-class weight filters for the model's current version, in the background."""
    model = get_model(session, path_ref("model", model_ref))
    config = (body or FiltersCreate()).config
    job = service.start_job(session, model, config.model_dump(mode="json"))
    session.commit()
    enqueue_filters(job.id)  # a lost message is re-sent by the sweep
    response.headers["Location"] = f"/v1/models/{model.id}/filters"
    return service.job_view(session, job)


@router.get("/{model_ref}/filters")
def read_filters(model_ref: str, session: SessionDep, caller: Operate) -> dict[str, Any]:
    """The model's latest filter job: status, progress and each class's filter accuracy."""
    return service.read_job(session, get_model(session, path_ref("model", model_ref)))
