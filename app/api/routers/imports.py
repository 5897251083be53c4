"""POST /v1/models/import: register a model trained elsewhere (a state_dict file)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import SessionDep, SettingsDep
from app.api.routers.models import model_out
from app.api.schemas import ModelOut
from app.queue import send
from app.services.imports import create_imported_model
from worker.celery_app import TASK_IMPORT_MODEL

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelImport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: int | str = Field(description="the dataset the model was trained on (id or name)")
    architecture: str = Field(
        "small_cnn", description="a registered architecture the state_dict fits (GET /docs)"
    )
    class_names: list[str] = Field(
        min_length=1,
        description="the class of each model output, in output order; the same set as the "
        "dataset's classes (the worker reorders the output layer when the order differs)",
    )
    state_dict_path: str = Field(
        min_length=1,
        description="absolute server-side path of a torch state_dict (.pt) saved with "
        "torch.save(model.state_dict()); loaded with weights_only=True. Inputs are expected "
        "normalised as (x/255 - 0.5)/0.5, like the service's own models.",
    )
    image_size: int = Field(32, ge=8, le=256)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds unlearning and any retrain")
    # The recipe below is used only if an exact method (sisa, retrain) later retrains the model.
    epochs_per_slice: int = Field(2, ge=1, le=200)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(64, ge=1, le=4096)


@router.post("/import", status_code=status.HTTP_202_ACCEPTED, response_model=ModelOut)
def import_model(
    body: ModelImport, session: SessionDep, settings: SettingsDep, response: Response
) -> ModelOut:
    assert settings.store_root is not None
    model, version = create_imported_model(session, body.model_dump(), settings.store_root)
    session.commit()
    # Enqueued only after the commit; the worker validates, converts and evaluates the weights.
    send(TASK_IMPORT_MODEL, version.id)
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(session, model)
