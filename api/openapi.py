"""OpenAPI for what FastAPI cannot infer: the two request bodies of ``POST /v1/jobs``.

The handler reads the body itself (to stream multipart uploads into S3), so the schema is given
explicitly: the multipart form, and the JSON form whose schema is ``JobCreate``.
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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
