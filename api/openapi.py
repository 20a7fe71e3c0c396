"""OpenAPI for what FastAPI cannot infer: the two request bodies of ``POST /v1/jobs``, and the errors
every operation can answer.

The handler reads the body itself (to stream multipart uploads into S3), so the schema is given
explicitly: the multipart form, and the JSON form whose schema is ``JobCreate``. Every error body
is ``ErrorBody`` (FastAPI's own 422 schema is replaced), and the answers that middleware and
dependencies give on any operation are declared on each: 401, 429 with ``Retry-After`` and 503 on
authenticated operations, 413 on operations with a body. The fuzz test holds the API to this.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import JobCreate

CREATE_JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video", "reference"],
                    "properties": {
                        "video": {"type": "string", "format": "binary",
                                  "description": "the video to restore: MP4, MOV, MKV or WebM"},
                        "reference": {"type": "array", "items": {"type": "string", "format": "binary"},
                                      "description": "one or more photos of the person: PNG, JPEG or WebP"},
                        "options": {"type": "string", "description": "JobOptions as JSON text"},
                    },
                },
                "encoding": {"options": {"contentType": "application/json"}},
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
        },
    }
}


_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
_COMMON: dict[str, dict[str, Any]] = {
    "401": {"description": "no API key, or an unknown one", **_ERROR},
    "429": {"description": "rate limit of the API key (`rate_limited`) or queued-job quota (`too_many_queued_jobs`)",
            "headers": {"Retry-After": {"description": "seconds to wait (rate limit)", "schema": {"type": "string"}}},
            **_ERROR},
    "503": {"description": "Redis, the broker or storage is unavailable", **_ERROR},
}
_WITH_BODY: dict[str, dict[str, Any]] = {
    "400": {"description": "the body cannot be parsed (`bad_request`)", **_ERROR},
    "413": {"description": "the request body is too large", **_ERROR},
}


def declare_common_errors(schema: dict[str, Any]) -> None:
    """Declare the errors every operation can answer, all with the ``ErrorBody`` schema."""
    schema.setdefault("components", {}).setdefault("schemas", {}).pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "invalid request", **_ERROR}
            extra = dict(_COMMON) if operation.get("security") else {}
            if "requestBody" in operation:
                extra |= _WITH_BODY
            for status, response in extra.items():
                existing = responses.get(status, {})
                responses[status] = response | {"description": existing.get("description", response["description"])}


def install(app: FastAPI) -> None:
    """Add the JobCreate schema (and the ones it refers to) to the generated document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        extra = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["JobCreate"] = extra
        declare_common_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
