"""One structured log record per HTTP request, with a request id echoed in ``X-Request-Id``.

The record carries method, path, query, route template, status, duration, client address, and,
once the API key is checked, the tenant and the key's hint (never the key). The formatter of
``jobs.logs`` redacts whatever secret a client puts in a path or query string.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ipfvr.access")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a caller's X-Request-Id is kept if it looks like this


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _CLIENT_REQUEST_ID.match(offered) else secrets.token_hex(8)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            state = scope.get("state") or {}
            client = scope.get("client")
            log.info(
                "%s %s %d", scope["method"], scope["path"], status,
                extra={
                    "event": "http_request", "request_id": request_id, "method": scope["method"],
                    "path": scope["path"], "query": scope.get("query_string", b"").decode("latin-1"),
                    "route": getattr(scope.get("route"), "path", None), "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    "client": client[0] if client else None,
                    "tenant": state.get("tenant"), "key_hint": state.get("key_hint"),
                },
            )
