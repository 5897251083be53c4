"""The OpenAPI document says what the API really answers: every error is problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.problems import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; 422s add `errors`, each naming a field",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = FastAPI.openapi(app)  # FastAPI's own document, cached on the app
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_SCHEMA
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _problem_response("Invalid request: the fields named")
            responses["4XX"] = _problem_response("Refused: see the problem's detail")
    return schema


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
