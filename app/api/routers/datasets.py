from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.auth import Operate
from app.api.deps import SessionDep, SettingsDep
from app.api.inputs import path_ref
from app.api.schemas import DatasetCreate, DatasetOut
from app.db.models import Dataset
from app.services import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _out(session: SessionDep, dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        id=dataset.id,
        name=dataset.name,
        classes=dataset.classes,
        channels=dataset.channels,
        counts=service.dataset_counts(session, dataset),
        duplicate_content=service.duplicate_content(session, dataset),
        created_at=dataset.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def register_dataset(
    body: DatasetCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: Operate,
) -> DatasetOut:
    dataset = service.register_dataset(
        session,
        name=body.name,
        root_text=body.root,
        data_roots=settings.data_roots,
        holdout_fraction=settings.holdout_fraction,
    )
    session.commit()
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return _out(session, dataset)


@router.get("/{dataset_ref}", response_model=DatasetOut)
def get_dataset(dataset_ref: str, session: SessionDep, caller: Operate) -> DatasetOut:
    return _out(session, service.get_dataset(session, path_ref("dataset", dataset_ref)))
