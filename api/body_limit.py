"""Refuse oversize request bodies early: by ``Content-Length`` before reading a byte, else while streaming.

A declared length above the route's limit gets a 413 at once, without the body being read (curl
and other ``Expect: 100-continue`` clients never even send it). A chunked body is counted as it
arrives and stopped at the limit; the error raised then is an ``HTTPException`` so that FastAPI's
body parsing passes it through unchanged to the error handlers.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """ASGI middleware; ``limit_for(scope)`` gives the byte limit of each request."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(
                413,
                "payload_too_large",
                f"the request body is larger than {limit} bytes",
                headers={"connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
