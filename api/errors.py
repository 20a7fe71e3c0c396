"""Errors to HTTP, in one place: every error body is ``{"error": {"code", "message", "field"?}}``.

Service errors (``jobs/errors.py``) carry their code, and the code decides the status
(``api/error_codes.py``). FastAPI's own validation errors and Starlette's HTTP errors (unknown
route, wrong method) are rewritten to the same shape, and anything unexpected becomes a 500
``internal_error`` (logged, not echoed).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.error_codes import CODES
from jobs import errors as service
from jobs.tenants.ratelimit import RateLimited

log = logging.getLogger(__name__)

# Starlette's own HTTP errors (a route it does not know, a method the route lacks, a body it cannot parse).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    detail: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def _field_of(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, service.ServiceError)
    if exc.code not in CODES:
        log.error("error code %r is not in api/error_codes.CODES", exc.code, exc_info=exc)
        return error_response(500, "internal_error", "internal error; the request was logged")
    status = CODES[exc.code].status
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": exc.retry_after_header}
    return error_response(status, exc.code, exc.message, exc.field, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    return error_response(
        422, "invalid_request", str(first.get("msg", "invalid request")), _field_of(tuple(first.get("loc", ())))
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; the request was logged")


async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """Redis (the job store and broker) unreachable, e.g. restarting: 503, never 500; retry shortly."""
    log.warning("the job store is unreachable: %s", exc)
    return error_response(
        503, "store_unavailable", "the job store is unreachable; retry in a moment", headers={"Retry-After": "1"}
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(service.ServiceError, _service_error)
    app.add_exception_handler(RedisError, _store_unavailable)
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
