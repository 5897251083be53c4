"""POST /v1/models/import: register a model trained elsewhere, from an uploaded state_dict
(multipart) or a file inside the data roots (JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from app.api.auth import Operate
from app.api.deps import SessionDep, SettingsDep
from app.api.routers.models import model_out
from app.api.schemas import ModelImport, ModelOut
from app.core.tasks import TASK_IMPORT_MODEL
from app.queue import send
from app.services.errors import InvalidInput, PayloadTooLarge
from app.services.imports import (
    ImportSpec,
    create_imported_model,
    discard_import,
    read_state_dict_file,
)

router = APIRouter(prefix="/v1/models", tags=["models"])

# Room for the form's other fields and part headers on top of the weights themselves.
FORM_OVERHEAD = 64 * 1024
LIST_FIELDS = ("class_names",)


@dataclass(frozen=True)
class ImportInput:
    body: ModelImport
    upload: bytes | None


async def _limited_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form, refused with 413 as soon as the body outgrows ``max_bytes``."""
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload exceeds FORGETD_IMPORT_MAX_BYTES ({max_bytes} bytes)")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(
                f"the upload exceeds FORGETD_IMPORT_MAX_BYTES ({max_bytes} bytes)"
            )
        return message

    return await Request(request.scope, receive).form(max_files=1, max_fields=40)


def _form_fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in form:
        if key == "file":
            continue
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if key in LIST_FIELDS:
            # Repeated fields, or one field holding a JSON list.
            if len(values) == 1 and values[0].lstrip().startswith("["):
                try:
                    fields[key] = json.loads(values[0])
                except json.JSONDecodeError:
                    raise InvalidInput(f"{key} is not a JSON list") from None
            else:
                fields[key] = values
        elif values:
            fields[key] = values[-1]
    return fields


def _validated(fields: Any, location: str) -> ModelImport:
    try:
        return ModelImport.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": (location, *e["loc"])} for e in exc.errors(include_input=False)]
        ) from None


async def import_input(request: Request, caller: Operate, settings: SettingsDep) -> ImportInput:
    """The import's fields and, for an upload, its bytes; read only after the key is checked."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await _limited_form(request, settings.import_max_bytes)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the multipart form needs the state_dict as field `file`")
            body = _validated(_form_fields(form), "form")
            if body.state_dict_path is not None:
                raise InvalidInput("give either the field `file` or state_dict_path, not both")
            data = await upload.read(settings.import_max_bytes + 1)
        finally:
            await form.close()
        if len(data) > settings.import_max_bytes:
            raise PayloadTooLarge(
                f"the upload exceeds FORGETD_IMPORT_MAX_BYTES ({settings.import_max_bytes} bytes)"
            )
        return ImportInput(body, data)
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput(
            "send JSON with state_dict_path, or multipart/form-data with the file"
        ) from None
    body = _validated(payload, "body")
    if body.state_dict_path is None:
        raise InvalidInput("give state_dict_path, or upload the file as multipart field `file`")
    return ImportInput(body, None)


_REQUEST_BODY = {
    "content": {
        "application/json": {"schema": ModelImport.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "name", "dataset", "class_names"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "name": {"type": "string"},
                    "dataset": {"type": "string"},
                    "architecture": {"type": "string"},
                    "class_names": {"type": "array", "items": {"type": "string"}},
                    "image_size": {"type": "integer"},
                },
            }
        },
    },
    "required": True,
}


@router.post(
    "/import",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ModelOut,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
def import_model(
    given: Annotated[ImportInput, Depends(import_input)],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> ModelOut:
    assert settings.store_root is not None
    body = given.body
    spec = ImportSpec(
        name=body.name,
        dataset=body.dataset,
        architecture=body.architecture,
        class_names=body.class_names,
        recipe=body.recipe(),
    )
    data = given.upload
    if data is None:
        assert body.state_dict_path is not None
        data = read_state_dict_file(
            body.state_dict_path, settings.data_roots, settings.import_max_bytes
        )
    model, version, key = create_imported_model(session, spec, data, settings.store_root)
    try:
        session.commit()
    except Exception:
        discard_import(settings.store_root, key)  # no model will ever convert these bytes
        raise
    # Enqueued only after the commit; the worker validates, converts and evaluates the weights.
    send(TASK_IMPORT_MODEL, version.id)
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(session, model)
