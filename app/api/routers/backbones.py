"""POST/GET /v1/backbones: fixed feature extractors trained on public data, on which models
of per-shard heads are built (``POST /v1/models`` with ``backbone``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from starlette.datastructures import UploadFile

from app.api.auth import Operate
from app.api.deps import SessionDep, SettingsDep
from app.api.inputs import ShortName, Text
from app.api.routers.imports import _limited_form
from app.api.schemas import Name
from app.core.recipe import ImageSize
from app.db.models import Backbone
from app.services.backbones import (
    BackboneUpload,
    backbone_view,
    find_backbone,
    register_upload,
)
from app.services.errors import InvalidInput, NotFound, PayloadTooLarge

router = APIRouter(prefix="/v1/backbones", tags=["backbones"])


class BackboneForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    architecture: ShortName
    trained_on: Annotated[Text, Field(min_length=3, max_length=2000)] = Field(
        description="what public data the backbone was trained on (none of it may be data "
        "that anyone may ask to be forgotten)"
    )
    image_size: ImageSize | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _triple(cls, value: Any) -> Any:
        """Three numbers: a JSON list or comma-separated."""
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else text.split(",")
            except json.JSONDecodeError:
                raise ValueError("must be three numbers") from None
        if not isinstance(value, list) or len(value) != 3:
            raise ValueError("must be three numbers, one per RGB channel")
        return value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(0 < v < 1e3 for v in value):
            raise ValueError("must be positive")
        return value

    @field_validator("mean")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(-1e3 < v < 1e3 for v in value):
            raise ValueError("must be finite numbers")
        return value


class BackboneOut(BaseModel):
    id: int
    name: str
    architecture: str
    sha256: str
    feature_dim: int
    trained_on: str
    image_size: int
    mean: list[float]
    std: list[float]
    stem: str
    source: str


async def backbone_input(
    request: Request, caller: Operate, settings: SettingsDep
) -> tuple[BackboneForm, bytes]:
    """The form and the weights; read only after the key is checked."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("send multipart/form-data with the state_dict as field `file`")
    form = await _limited_form(request, settings.import_max_bytes)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("the multipart form needs the state_dict as field `file`")
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        try:
            body = BackboneForm.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("form", *e["loc"])} for e in exc.errors(include_input=False)]
            ) from None
        data = await upload.read(settings.import_max_bytes + 1)
    finally:
        await form.close()
    if len(data) > settings.import_max_bytes:
        raise PayloadTooLarge(
            f"the upload exceeds FORGETD_IMPORT_MAX_BYTES ({settings.import_max_bytes} bytes)"
        )
    return body, data


_REQUEST_BODY = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "name", "architecture", "trained_on"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "name": {"type": "string"},
                    "architecture": {"type": "string"},
                    "trained_on": {"type": "string"},
                    "image_size": {"type": "integer"},
                    "mean": {"type": "string", "description": "three numbers, e.g. 0.5,0.5,0.5"},
                    "std": {"type": "string", "description": "three positive numbers"},
                },
            }
        },
    },
    "required": True,
}


def _out(backbone: Backbone) -> BackboneOut:
    return BackboneOut.model_validate(backbone_view(backbone))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=BackboneOut,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
def register_backbone(
    given: Annotated[tuple[BackboneForm, bytes], Depends(backbone_input)],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> BackboneOut:
    assert settings.store_root is not None
    body, data = given
    upload = BackboneUpload(
        name=body.name,
        architecture=body.architecture,
        trained_on=body.trained_on,
        image_size=body.image_size,
        mean=body.mean,
        std=body.std,
    )
    backbone = register_upload(session, upload, data, settings.store_root)
    session.commit()
    response.headers["Location"] = f"/v1/backbones/{backbone.id}"
    return _out(backbone)


@router.get("", response_model=list[BackboneOut])
def list_backbones(session: SessionDep, caller: Operate) -> list[BackboneOut]:
    rows = session.scalars(select(Backbone).order_by(Backbone.id)).all()
    return [_out(b) for b in rows]


@router.get("/{backbone_ref}", response_model=BackboneOut)
def read_backbone(backbone_ref: str, session: SessionDep, caller: Operate) -> BackboneOut:
    found = find_backbone(session, backbone_ref[:200])
    if found is None:
        raise NotFound(f"backbone {backbone_ref[:200]!r} does not exist")
    return _out(found)
