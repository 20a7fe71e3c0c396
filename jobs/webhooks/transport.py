"""The httpx transport of webhook deliveries: it connects only to an address the SSRF policy checked.

:class:`GuardedTransport` resolves and checks the request's host (``jobs/webhooks/ssrf.py``),
sends the request to the checked IP (with the original ``Host`` header and TLS server name),
refuses at the socket level to connect to any address that fails the policy, follows no
redirects (httpx clients must keep ``follow_redirects=False``; the transport itself never
follows), bounds the whole exchange to a deadline and reads at most ``max_response_bytes`` of the
answer. httpx logs each request line at INFO; the transport puts a redacting filter on that
logger, since a receiver's URL may carry its own token.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from jobs.logs import RedactingFilter, Redactor
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy

MAX_RESPONSE_BYTES = 64 * 1024  # bytes of a receiver's answer read at most (the rest is dropped)


class TargetRefused(httpx.ConnectError):
    """A guarded transport refused to connect (the address failed the policy); ``reason`` says why."""

    def __init__(self, reason: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(reason, request=request)
        self.reason = reason


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("webhook_deadline", default=float("inf"))


def _remaining(timeout: float | None) -> float:
    """The socket timeout for one operation: the phase timeout, cut to what is left of the deadline."""
    left = _deadline.get() - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the webhook exchange ran past its deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write stops at the exchange's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to numeric hosts that pass the policy; never resolves a name."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
            self._policy.check_address(address)
        except ValueError as exc:
            raise httpcore.ConnectError(f"refusing to resolve {host!r} at connect time") from exc
        except ForbiddenTarget as exc:
            raise httpcore.ConnectError(exc.message) from exc
        stream = self._tcp.connect_tcp(str(address), port, _remaining(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never webhook targets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _BoundedBody(httpx.SyncByteStream):
    """Yields at most ``limit`` bytes of a response body, then stops (the connection is dropped)."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        left = self._limit
        for chunk in self._inner:
            if left <= 0:
                break
            yield chunk[:left]
            left -= len(chunk)

    def close(self) -> None:
        self._inner.close()


def _redact_httpx_log() -> None:
    """httpx logs every request line (with the receiver's query, which may hold its token) at INFO."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter(Redactor()))


class GuardedTransport(httpx.HTTPTransport):
    """The httpx transport of webhook deliveries (see the module docstring).

    ``timeout_s`` bounds the whole exchange (connect, TLS, request, answer), on top of the client's
    per-phase timeouts; ``max_response_bytes`` bounds what is read of the answer.
    """

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        timeout_s: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        context = ssl_context or httpx.create_ssl_context()
        super().__init__(verify=context, http1=True, http2=False, retries=0, trust_env=False)
        self._policy = policy
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._pool = httpcore.ConnectionPool(  # replaces the parent's pool: same settings, pinned backend
            ssl_context=context,
            max_connections=8,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_PinnedBackend(policy),
        )
        _redact_httpx_log()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            target = self._policy.resolve(str(request.url))
        except ForbiddenTarget as exc:
            raise TargetRefused(exc.message, request=request) from exc
        request.url = httpx.URL(target.url)  # the checked address; Host keeps the name the client used
        request.headers.setdefault("host", target.host_header)
        if "sni_hostname" not in request.extensions and target.server_name != str(target.address):
            request.extensions = {**request.extensions, "sni_hostname": target.server_name}
        _deadline.set(time.monotonic() + self._timeout_s)
        response = super().handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _BoundedBody(response.stream, self._max_response_bytes)
        return response
