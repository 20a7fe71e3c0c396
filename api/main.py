"""The FastAPI application factory: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import Scope

from api import errors, openapi
from api.body_limit import BodyLimitMiddleware
from api.observability import ObservabilityMiddleware, build_registry
from api.routes import docs, health, identities, reports, uploads, web, webhooks
from api.routes import jobs as job_routes  # not ``jobs``: that name is the service package
from api.services import Services
from jobs.logs import configure_logging
from jobs.settings import Settings, get_settings
from jobs.webhooks.ssrf import Resolver, system_resolver

DESCRIPTION = """Reference-guided, identity-preserving face video restoration as a job service.

Authenticate with `Authorization: Bearer <API key>`. Errors are always
`{"error": {"code", "message", "field"?}}` with stable codes.
"""
TITLE, VERSION = "IP-FVR job service", "1"
ROUTERS = (job_routes.router, reports.router, identities.router, uploads.router, webhooks.router, health.router)


def api_document() -> dict[str, Any]:
    """The OpenAPI document, without settings or connections (``python -m api.openapi``)."""
    app = FastAPI(title=TITLE, version=VERSION, description=DESCRIPTION)
    for router in ROUTERS:
        app.include_router(router)
    return openapi.build(app.routes, title=TITLE, version=VERSION, description=DESCRIPTION)


def create_app(
    settings: Settings | None = None, *, resolver: Resolver = system_resolver, configure_logs: bool = True
) -> FastAPI:
    """Build the app. Settings come from the environment unless given (and fail fast when invalid).

    ``resolver`` is the DNS used to check webhook targets. ``configure_logs=False`` leaves this
    process's logging alone (an app embedded in a host that owns logging).
    """
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings, service="api")
    services = Services.from_settings(settings, resolver=resolver)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    app = FastAPI(
        title=TITLE, version=VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.services = services
    registry, http_metrics = build_registry(settings, services.redis)
    app.state.metrics_registry = registry
    for router in ROUTERS:
        app.include_router(router)
    docs.install(app)
    web.install(app)
    errors.install(app)
    openapi.install(app)

    def limit_for(scope: Scope) -> int:
        """Only a multipart job request may be large; every other body is JSON."""
        path = scope["path"].rstrip("/")
        content_type = Headers(scope=scope).get("content-type", "")
        if scope["method"] == "POST" and content_type.startswith("multipart/form-data"):
            if path == "/v1/jobs":
                return settings.max_request_bytes
            if path == "/v1/identities":
                return settings.max_identity_request_bytes
        return settings.max_json_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(ObservabilityMiddleware, metrics=http_metrics)
    return app
