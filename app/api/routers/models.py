from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from app.api.auth import Operate
from app.api.deps import SessionDep, SettingsDep
from app.api.inputs import path_ref
from app.api.schemas import ModelCreate, ModelOut
from app.db.models import Model, ModelVersion, VersionStatus
from app.queue import enqueue_version
from app.services.backbones import HeadsChoice, heads_recipe
from app.services.errors import InvalidInput
from app.services.models import create_model, get_model
from app.services.progress import version_progress

router = APIRouter(prefix="/v1/models", tags=["models"])


def _version_view(version: ModelVersion) -> dict[str, object]:
    return {
        "number": version.number,
        "status": version.status,
        "reason": version.reason,
        "method": version.method,
        "manifest_sha256": version.manifest_sha256,
        "retired_classes": version.retired_classes,
        "metrics": version.metrics,
        "started_at": version.started_at,
        "completed_at": version.completed_at,
    }


def model_out(session: SessionDep, model: Model) -> ModelOut:
    versions = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number)
    ).all()
    numbers = {v.id: v.number for v in versions}
    current = next((v for v in versions if v.id == model.current_version_id), None)
    building = next(
        (
            v
            for v in reversed(versions)
            if v.status in (VersionStatus.TRAINING, VersionStatus.EVALUATING)
        ),
        None,
    )
    views = []
    for version in versions:
        view = _version_view(version)
        view["parent"] = numbers.get(version.parent_id) if version.parent_id else None
        views.append(view)
    return ModelOut(
        id=model.id,
        name=model.name,
        dataset_id=model.dataset_id,
        architecture=model.architecture,
        config=model.config,
        status=model.status,
        status_reason=model.status_reason,
        current_version=current.number if current else None,
        retired_classes=current.retired_classes if current else [],
        versions=views,
        metrics=current.metrics if current else {},
        progress=version_progress(session, building, model.recipe.slices) if building else None,
        require_approval=bool(model.require_approval),
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ModelOut)
def register_model(
    body: ModelCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: Operate,
) -> ModelOut:
    recipe, architecture = body.recipe(), body.architecture
    if body.backbone is not None:
        assert settings.store_root is not None
        choice = HeadsChoice(
            backbone=body.backbone,
            head=body.head or "linear",
            tune=body.tune or "head",
            architecture_given="architecture" in body.model_fields_set,
        )
        recipe, architecture = heads_recipe(session, choice, recipe, settings.store_root)
    elif body.head is not None or body.tune is not None:
        raise InvalidInput("head and tune need a backbone")
    model, version = create_model(session, body.name, body.dataset, architecture, recipe)
    model.require_approval = body.require_approval
    session.commit()
    enqueue_version(version.id)
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(session, model)


@router.get("/{model_ref}", response_model=ModelOut)
def read_model(model_ref: str, session: SessionDep, caller: Operate) -> ModelOut:
    return model_out(session, get_model(session, path_ref("model", model_ref)))
