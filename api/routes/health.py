"""Liveness, readiness (Redis and storage reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep
from api.error_codes import declare
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    """The process serves requests."""
    return Health()


@router.get("/readyz", openapi_extra=declare("redis_unavailable", "storage_unavailable", "store_unavailable"))
def readyz(services: ServicesDep) -> Readiness:
    """Redis and the bucket answer. Worker states are reported, but do not make the API unready."""
    services.store.check()
    services.storage.check()
    workers = {state.value: n for state, n in services.workers.counts().items()}
    return Readiness(checks={"redis": "ok", "storage": "ok"}, workers=workers)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
