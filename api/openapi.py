"""The OpenAPI document: what FastAPI cannot infer, and the errors of each operation.

* ``POST /v1/jobs`` reads its body itself (to stream multipart uploads into S3), so both request
  bodies are given explicitly: the multipart form (its ``options`` part is ``JobOptions`` as JSON
  text) and the JSON form, ``JobCreate``.
* Errors: each operation answers the codes it declares (``api.error_codes.declare``) plus the
  ones its kind always can (an API key: 401, 429, 503; a body: 400, 413, 422). FastAPI's blanket
  422 is dropped where nothing is validated. Codes are grouped by status, and each status's body
  schema enumerates its codes.
  The schemathesis fuzz test and every service test's HTTP client hold the API to this.

``python -m api.openapi`` prints the document; ``--error-table`` prints the table of error codes
per endpoint that ``docs/service.md`` carries (a test keeps the two the same).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from api.error_codes import AUTHENTICATED, CODES, DECLARED, WITH_BODY
from api.schemas import IdentityCreate, JobCreate
from jobs.options import JobOptions


def _multipart(required: list[str], files: dict[str, Any], options_schema: str) -> dict[str, Any]:
    """A multipart/form-data body: file parts and an ``options`` part holding ``options_schema`` as JSON text."""
    options = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": f"#/components/schemas/{options_schema}"},
        "description": f"{options_schema} as JSON text",
    }
    return {
        "schema": {"type": "object", "required": required, "properties": {**files, "options": options}},
        "encoding": {"options": {"contentType": "application/json"}},
    }


_PHOTOS = {"type": "array", "items": {"type": "string", "format": "binary"}}

CREATE_JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": _multipart(
                ["video"],
                {
                    "video": {
                        "type": "string",
                        "format": "binary",
                        "description": "the video to restore: MP4, MOV, MKV or WebM",
                    },
                    "reference": _PHOTOS
                    | {
                        "description": "one or more photos of the person: PNG, JPEG or WebP "
                        "(optional when options name an `identity`)"
                    },
                },
                "JobOptions",
            ),
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
        },
    }
}

CREATE_IDENTITY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": _multipart(
                ["reference", "options"],
                {
                    "reference": _PHOTOS
                    | {"description": "photos of one person: PNG, JPEG or WebP (the largest face of each)"},
                },
                "IdentityCreate",
            ),
        },
    }
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait (`rate_limited`)", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait (`store_unavailable`)", "schema": {"type": "string"}}},
}


def error_schema(codes: list[str]) -> dict[str, Any]:
    """The error body (``{"error": {"code", "message", "field"?}}``) whose ``code`` is one of ``codes``."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the parameter, header, form or JSON field at fault"},
                },
            }
        },
    }


def operation_codes(operation: dict[str, Any]) -> list[str]:
    """The codes an operation answers: its declared ones and those of its kind, in table order."""
    codes = set(operation.get(DECLARED, []))
    if operation.get("security"):
        codes.update(AUTHENTICATED)
    if "requestBody" in operation:
        codes.update(WITH_BODY)
    return [c for c in CODES if c in codes]


def declare_errors(schema: dict[str, Any]) -> None:
    """Replace each operation's error responses by one per status, with its codes enumerated."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            codes = operation_codes(operation)
            operation.pop(DECLARED, None)
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if int(s) >= 400]:
                del responses[status]
            for status in sorted({CODES[c].status for c in codes}):
                group = [c for c in codes if CODES[c].status == status]
                response: dict[str, Any] = {
                    "description": "; ".join(f"`{c}`: {CODES[c].meaning}" for c in group),
                    "content": {"application/json": {"schema": error_schema(group)}},
                }
                if status in _HEADERS:
                    response["headers"] = _HEADERS[status]
                responses[str(status)] = response


def build(routes: list[BaseRoute], *, title: str, version: str, description: str) -> dict[str, Any]:
    schema = get_openapi(title=title, version=version, description=description, routes=routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (JobCreate, JobOptions, IdentityCreate):
        extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = extra
    declare_errors(schema)
    return schema


def install(app: FastAPI) -> None:
    """Serve :func:`build`'s document for ``app`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app.routes, title=app.title, version=app.version, description=app.description)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_table(schema: dict[str, Any]) -> str:
    """Markdown: the statuses and codes of each endpoint, then every code's meaning."""
    lines = ["| Endpoint | Errors (status: codes) |", "|---|---|"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            groups = []
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    error = response["content"]["application/json"]["schema"]["properties"]["error"]
                    groups.append(f"{status}: " + ", ".join(f"`{c}`" for c in error["properties"]["code"]["enum"]))
            lines.append(f"| `{method.upper()} {path}` | {'; '.join(groups) or 'none'} |")
    lines.append("| any other path or method | 404: `not_found`; 405: `method_not_allowed` |")
    lines += ["", "| Code | Status | Meaning |", "|---|---|---|"]
    lines += [f"| `{code}` | {entry.status} | {entry.meaning} |" for code, entry in CODES.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    from api.main import api_document

    parser = argparse.ArgumentParser(prog="python -m api.openapi", description=__doc__.split("\n")[0])
    parser.add_argument("--error-table", action="store_true", help="print the error table of docs/service.md")
    args = parser.parse_args()
    schema = api_document()
    print(error_table(schema) if args.error_table else json.dumps(schema, indent=2), end="")


if __name__ == "__main__":
    main()
