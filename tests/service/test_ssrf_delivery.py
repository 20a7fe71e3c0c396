"""The SSRF guard of webhooks, at delivery: injectable DNS, DNS rebinding, redirects, bounds.

Deliveries run through the real :class:`WebhookSender` and :class:`GuardedTransport` against loopback
servers opened here (allowed through the operator allowlist ``127.0.0.1/32``), with a resolver double
standing in for DNS.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpcore
import httpx
import pytest

from jobs.webhooks.sender import WebhookSender
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy
from jobs.webhooks.transport import MAX_RESPONSE_BYTES, GuardedTransport, TargetRefused, _PinnedBackend
from tests.service.http_raw import read_http_request

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.1/32"),)
SECRET = "whsec_" + "A" * 32


class ResolverDouble:
    """DNS stand-in: answers from a table, one answer list per successive lookup of a name."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        lookups = self.answers[host]
        return list(lookups[min(self.calls.count(host), len(lookups)) - 1])


Request = tuple[str, dict[str, str], bytes]  # (request line, lower-cased headers, body), as read_http_request gives


class RawServerDouble:
    """A loopback TCP server; ``handler(conn, request)`` answers each connection in a thread."""

    def __init__(self, handler: Callable[[socket.socket, Request], None]) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = read_http_request(conn, timeout=10)
            except OSError:
                return  # the client went away (or stalled) before a whole request; nothing to answer
            self.requests.append(request)
            try:
                self.handler(conn, request)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def answer(status: str, body: bytes = b"", headers: str = "") -> Callable[[socket.socket, Request], None]:
    def handle(conn: socket.socket, _: Request) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body)

    return handle


@pytest.fixture()
def server_factory() -> Iterator[Callable[[Callable[[socket.socket, Request], None]], RawServerDouble]]:
    servers: list[RawServerDouble] = []

    def make(handler: Callable[[socket.socket, Request], None]) -> RawServerDouble:
        servers.append(RawServerDouble(handler))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


# ---------------------------------------------------------------------------------------------- resolution
def test_names_are_refused_by_what_they_resolve_to() -> None:
    resolver = ResolverDouble(
        {
            "metadata.test": [["169.254.169.254"]],
            "mixed.test": [["93.184.216.34", "10.0.0.7"]],
            "mapped.test": [["::ffff:127.0.0.1"]],
            "nat64.test": [["64:ff9b::a9fe:a9fe"]],
            "empty.test": [[]],
            "public.test": [["93.184.216.34", "2606:2800:220:1::1"]],
        }
    )
    policy = TargetPolicy(resolver=resolver)
    for name in ("metadata", "mixed", "mapped", "nat64", "empty", "unknown"):
        with pytest.raises(ForbiddenTarget):
            policy.resolve(f"https://{name}.test/hook")
    target = policy.resolve("https://public.test:8443/hook?a=1#frag")
    assert target.url == "https://93.184.216.34:8443/hook?a=1"
    assert (target.host_header, target.server_name) == ("public.test:8443", "public.test")
    assert resolver.calls.count("public.test") == 1
    with pytest.raises(ForbiddenTarget):
        policy.resolve("http://localhost/")  # refused before any lookup
    assert "localhost" not in resolver.calls


def test_dns_rebinding_is_caught_at_delivery() -> None:
    """The API's lookup sees a public address; the delivery's lookup sees loopback and refuses for good."""
    resolver = ResolverDouble({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    policy = TargetPolicy(resolver=resolver)
    policy.resolve("http://rebind.test/hook")  # job creation: accepted
    sender = WebhookSender(policy, timeout_s=2)
    try:
        result = sender.send("http://rebind.test/hook", "msg_1", b"{}", [SECRET])
    finally:
        sender.close()
    assert not result.delivered and result.permanent and "loopback" in result.detail
    assert resolver.calls == ["rebind.test", "rebind.test"]


def test_delivery_connects_to_the_checked_address_and_resolves_once(server_factory) -> None:  # noqa: ANN001
    """A name resolving (once) to the allowlisted loopback receives the request with its own Host header.

    The second answer would point elsewhere (a rebinding after the check): it is never asked for.
    """
    server = server_factory(answer("204 No Content"))
    resolver = ResolverDouble({"hooks.test": [["127.0.0.1"], ["10.9.9.9"]]})
    policy = TargetPolicy(allow_cidrs=LOOPBACK_ONLY, resolver=resolver)
    sender = WebhookSender(policy, timeout_s=5)
    try:
        result = sender.send(f"http://hooks.test:{server.port}/in?x=1", "msg_2", b'{"a":1}', [SECRET])
    finally:
        sender.close()
    assert result.delivered, result
    assert resolver.calls == ["hooks.test"]
    assert len(server.requests) == 1
    request_line, headers, body = server.requests[0]
    assert request_line == "POST /in?x=1 HTTP/1.1"
    assert headers["host"] == f"hooks.test:{server.port}"
    assert body == b'{"a":1}'


def test_guarded_transport_pins_names_itself_and_never_resolves_at_connect(server_factory) -> None:  # noqa: ANN001
    server = server_factory(answer("200 OK", b"ok"))
    resolver = ResolverDouble({"pinned.test": [["127.0.0.1"], ["127.0.0.2"]]})
    policy = TargetPolicy(allow_cidrs=LOOPBACK_ONLY, resolver=resolver)
    with httpx.Client(transport=GuardedTransport(policy, timeout_s=5)) as client:
        assert client.get(f"http://pinned.test:{server.port}/a").text == "ok"
        with pytest.raises(TargetRefused):
            client.get("http://169.254.169.254/latest/meta-data/")
    assert resolver.calls == ["pinned.test"]
    backend = _PinnedBackend(policy)
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("pinned.test", server.port)  # a name at connect time would be a second lookup
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("10.0.0.1", 80)  # an address outside the policy, even if handed over directly


# ---------------------------------------------------------------------------------------------- redirects, bounds
def test_redirects_are_not_followed(server_factory) -> None:  # noqa: ANN001
    landing = server_factory(answer("204 No Content"))
    redirect = server_factory(answer("302 Found", headers=f"location: http://127.0.0.1:{landing.port}/landing\r\n"))
    sender = WebhookSender(TargetPolicy(allow_cidrs=LOOPBACK_ONLY), timeout_s=5)
    try:
        result = sender.send(f"http://127.0.0.1:{redirect.port}/hook", "msg_3", b"{}", [SECRET])
    finally:
        sender.close()
    assert not result.delivered and result.detail == "HTTP 302"
    time.sleep(0.2)
    assert len(redirect.requests) == 1 and landing.requests == []


def test_the_answer_is_read_only_up_to_the_bound(server_factory) -> None:  # noqa: ANN001
    total = 64 * 1024 * 1024
    sent: list[int] = []

    def flood(conn: socket.socket, _: Request) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
        block, count = b"x" * 65536, 0
        try:
            while count < total:
                conn.sendall(block)
                count += len(block)
        finally:
            sent.append(count)

    server = server_factory(flood)
    sender = WebhookSender(TargetPolicy(allow_cidrs=LOOPBACK_ONLY), timeout_s=10)
    try:
        result = sender.send(f"http://127.0.0.1:{server.port}/big", "msg_4", b"{}", [SECRET])
    finally:
        sender.close()
    assert result.delivered
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent and sent[0] < total // 4, f"the server pushed {sent} of {total} bytes (bound {MAX_RESPONSE_BYTES})"


def test_a_trickling_receiver_is_cut_at_the_deadline(server_factory) -> None:  # noqa: ANN001
    """Each byte arrives well within the per-read timeout; only the exchange deadline stops it."""

    trickled_to_the_end = threading.Event()

    def trickle(conn: socket.socket, _: Request) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nx-padding: " + b"a" * 200:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)
        trickled_to_the_end.set()  # never reached once the sender has hung up (sendall raises)

    server = server_factory(trickle)
    sender = WebhookSender(TargetPolicy(allow_cidrs=LOOPBACK_ONLY), timeout_s=1.0)
    started = time.monotonic()
    try:
        result = sender.send(f"http://127.0.0.1:{server.port}/slow", "msg_5", b"{}", [SECRET])
    finally:
        sender.close()
    print(f"\ncut after {time.monotonic() - started:.2f} s (deadline 1 s, the trickle lasts over 10 s)")
    assert not result.delivered and not result.permanent and "Timeout" in result.detail, result
    assert not trickled_to_the_end.is_set()  # the sender gave up before the receiver was done
