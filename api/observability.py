"""What the API records of each HTTP request: a request id, one structured access record, the HTTP metrics.

One ASGI middleware does all three around the same ``send``:

* **Request id.** A caller's ``X-Request-Id`` is kept if it looks like an id, else one is made; it
  is echoed in the response's ``X-Request-Id`` and carried by the access record.
* **Access record.** One log record per request (logger ``ipfvr.access``): method, path, query,
  route template, status, duration, client address, and, once the API key is checked, the tenant
  and the key's hint (never the key). The formatter of ``jobs.logs`` redacts whatever secret a
  client puts in a path or query string.
* **Metrics.** Requests and latency by route template (never by raw path: ids would explode the
  label set), in the API's Prometheus registry beside the shared Redis-backed metrics.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.metrics import NAMESPACE, RedisCollector
from jobs.settings import Settings

log = logging.getLogger("ipfvr.access")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a caller's X-Request-Id is kept if it looks like this
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{NAMESPACE}_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{NAMESPACE}_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


def build_registry(settings: Settings, client: redis.Redis) -> tuple[CollectorRegistry, HttpMetrics]:
    """The API's registry: this process's HTTP metrics plus the shared ones kept in Redis."""
    registry = CollectorRegistry()
    registry.register(RedisCollector(client, settings.key_prefix, settings.engines, settings.queue_for))
    return registry, HttpMetrics(registry)


class ObservabilityMiddleware:
    """ASGI middleware: request id, access record and HTTP metrics of every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _CLIENT_REQUEST_ID.match(offered) else secrets.token_hex(8)
        start = time.perf_counter()
        status = 500  # what an exception that escapes the app becomes

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None)
            method = scope["method"]
            self.metrics.requests.labels(method, route or "unmatched", str(status)).inc()
            self.metrics.latency.labels(method, route or "unmatched").observe(seconds)
            state = scope.get("state") or {}
            client = scope.get("client")
            log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "event": "http_request",
                    "request_id": request_id,
                    "method": method,
                    "path": scope["path"],
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                    "tenant": state.get("tenant"),
                    "key_hint": state.get("key_hint"),
                },
            )
