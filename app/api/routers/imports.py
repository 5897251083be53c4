"""POST /v1/models/import: register a model trained elsewhere (a state_dict file)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import SessionDep, SettingsDep
from app.api.routers.models import model_out
from app.api.schemas import ModelImport, ModelOut
from app.core.tasks import TASK_IMPORT_MODEL
from app.queue import send
from app.services.imports import ImportSpec, create_imported_model

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post("/import", status_code=status.HTTP_202_ACCEPTED, response_model=ModelOut)
def import_model(
    body: ModelImport, session: SessionDep, settings: SettingsDep, response: Response
) -> ModelOut:
    assert settings.store_root is not None
    spec = ImportSpec(
        name=body.name,
        dataset=body.dataset,
        architecture=body.architecture,
        class_names=body.class_names,
        state_dict_path=body.state_dict_path,
        recipe=body.recipe(),
    )
    model, version = create_imported_model(session, spec, settings.store_root)
    session.commit()
    # Enqueued only after the commit; the worker validates, converts and evaluates the weights.
    send(TASK_IMPORT_MODEL, version.id)
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(session, model)
