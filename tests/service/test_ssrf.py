"""The SSRF guard of webhooks: refused address forms, injectable DNS, DNS rebinding, redirects, bounds.

Address checks run on :class:`TargetPolicy` directly. Deliveries run through the real
:class:`WebhookSender` and :class:`GuardedTransport` against loopback servers opened here (allowed
through the operator allowlist ``127.0.0.1/32``), with a resolver double standing in for DNS.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpcore
import httpx
import pytest

from jobs.settings import Settings
from jobs.webhooks.sender import WebhookSender
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy, parse_numeric_host
from jobs.webhooks.transport import MAX_RESPONSE_BYTES, GuardedTransport, TargetRefused, _PinnedBackend
from tests.service.http_raw import read_http_request
from tests.service.stack import ServiceStack

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


# ---------------------------------------------------------------------------------------------- address forms
REFUSED = [
    # IPv4 loopback, private, link-local (cloud metadata), shared, multicast, reserved, unspecified
    "http://127.0.0.1/",
    "http://127.255.255.254/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://0.0.0.0/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    # the same in decimal, octal, hex and short spellings
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://017700000001/",
    "http://0/",
    "http://2852039166/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://012.0.0.1/",
    "http://127.0.0.1./",
    # IPv6 and IPv6 forms that embed a forbidden IPv4 address
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[100::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[0:0:0:0:0:ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    # names that are loopback by definition
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:8080/x",
    "http://api.localhost/",
    # scheme, credentials, malformed
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "http://user:pw@example.com/",
    "http://user@example.com/",
    "http://:pw@example.com/",
    "https:///nohost",
    "http://1.2.3.4.5/",
    "http://09.1.1.1/",
    "http://256.1.1.1/",
    "http://0x100000000/",
    "http://example.com:99999/",
    "http://exa mple.com/",
    "http://example.com/\x00",
    "http://example.com/" + "a" * 3000,
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_targets(url: str) -> None:
    with pytest.raises(ForbiddenTarget) as refused:
        TargetPolicy().check_url(url)
    assert refused.value.code == "webhook_url_forbidden"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://0xa9fea9fe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        # reserved space that Python's is_private counts as private
        "http://240.0.0.1/",
        "http://255.255.255.254/",
        "http://198.18.0.1/",
        "http://192.0.0.8/",
        "http://0.1.2.3/",
        "http://100.64.0.1/",
        "http://[2001:db8::1]/",
        "http://[::ffff:240.0.0.1]/",
    ],
)
def test_development_mode_still_refuses_link_local_multicast_reserved_and_unspecified(url: str) -> None:
    with pytest.raises(ForbiddenTarget):
        TargetPolicy(allow_private=True).check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://10.1.2.3/",
        "http://172.31.255.1/",
        "http://192.168.1.20/",
        "http://[::1]:8080/",
        "http://[fd00::5]/",
        "http://[::ffff:10.0.0.7]/",
        "http://localhost:8000/",
    ],
)
def test_development_mode_opens_loopback_and_rfc1918_only(url: str) -> None:
    TargetPolicy(allow_private=True).check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/hook",
        "http://[2606:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[64:ff9b::808:808]/",
        "https://hooks.example.com/ipfvr?x=1",
        "http://134744072/",
    ],
)
def test_public_targets_pass(url: str) -> None:
    TargetPolicy().check_url(url)


def test_numeric_spellings_are_read_like_inet_aton() -> None:
    assert str(parse_numeric_host("2130706433")) == "127.0.0.1"
    assert str(parse_numeric_host("0177.0.0.1")) == "127.0.0.1"
    assert str(parse_numeric_host("0x7f.1")) == "127.0.0.1"
    assert str(parse_numeric_host("10.1")) == "10.0.0.1"
    assert str(parse_numeric_host("192.168.257")) == "192.168.1.1"
    assert parse_numeric_host("hooks.example.com") is None
    assert parse_numeric_host("1e100.net") is None


def test_operator_allowlist_opens_only_its_networks() -> None:
    policy = TargetPolicy(allow_cidrs=(ipaddress.ip_network("10.1.0.0/16"),))
    policy.check_url("http://10.1.2.3/hook")
    policy.check_url("http://[::ffff:10.1.2.3]/hook")
    with pytest.raises(ForbiddenTarget):
        policy.check_url("http://10.2.0.1/hook")
    with pytest.raises(ForbiddenTarget):
        policy.check_url("http://169.254.169.254/")


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


# ---------------------------------------------------------------------------------------------- through the API
@pytest.mark.parametrize(
    "url",
    [
        "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://[fe80::1]/",
        "http://user:pw@hooks.example.com/",
        "http://224.0.0.1/",
    ],
)
def test_the_api_refuses_forbidden_webhooks(
    stack: ServiceStack, tenant: tuple[str, httpx.Client], carphone_distorted: Path, astronaut_png: Path, url: str
) -> None:
    name, client = tenant
    response = client.post(
        "/v1/jobs",
        files=[
            ("options", (None, json.dumps({"webhook": url}), "application/json")),
            ("video", ("clip.mp4", carphone_distorted.read_bytes())),
            ("reference", ("face.png", astronaut_png.read_bytes())),
        ],
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {
        **response.json()["error"],
        "code": "webhook_url_forbidden",
        "field": "options.webhook",
    }
    assert stack.objects(f"inputs/{name}/") == []  # the uploads of a refused job are removed


# ---------------------------------------------------------------------------------------------- production settings
PRODUCTION = {"env": "production", "secret_key": "p" * 40, "webhook_allow_private": False}
# (URL, the reason the refusal must give)
REFUSED_IN_PRODUCTION = [
    ("http://127.0.0.1:9/hook", "127.0.0.1 is loopback"),
    ("http://localhost:9/hook", "is loopback"),
    ("http://[::1]/", "::1 is loopback"),
    ("http://10.0.0.5/", "10.0.0.5 is private"),
    ("http://192.168.1.1/", "is private"),
    ("http://172.16.0.1/", "is private"),
    ("http://[fd00::1]/", "is private"),
    ("http://100.64.0.1/", "100.64.0.1 is shared"),
    ("http://0.0.0.0/", "is unspecified"),
    ("http://240.0.0.1/", "240.0.0.1 is reserved"),
    ("http://224.0.0.1/", "is multicast"),
    ("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/", "169.254.169.254 is link-local"),
    ("http://2852039166/", "169.254.169.254 is link-local"),
    ("http://[::ffff:169.254.169.254]/", "is link-local"),
    ("http://[fe80::1]/", "is link-local"),
    ("http://user:pw@hooks.example.com/", "must not carry credentials"),
]


def test_production_settings_build_a_policy_that_opens_nothing_private() -> None:
    """The policy the API and the webhook workers both build (TargetPolicy.from_settings)."""
    production = TargetPolicy.from_settings(Settings(**PRODUCTION))
    for url, reason in REFUSED_IN_PRODUCTION:
        with pytest.raises(ForbiddenTarget, match=re.escape(reason)):
            production.resolve(url)
    allowlisted = TargetPolicy.from_settings(Settings(**PRODUCTION, webhook_allow_cidrs=["10.1.0.0/16"]))
    assert str(allowlisted.resolve("http://10.1.2.3:8080/hook").address) == "10.1.2.3"
    with pytest.raises(ForbiddenTarget, match="10.2.0.1 is private"):
        allowlisted.resolve("http://10.2.0.1/")
    development = TargetPolicy.from_settings(Settings(webhook_allow_private=True))
    assert str(development.resolve("http://10.0.0.5/").address) == "10.0.0.5"


@pytest.fixture(scope="module")
def production_api(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    """An API with production settings (no workers: the refusals happen at submission)."""
    return make_stack(restore_worker=False, service_worker=False, **PRODUCTION)


@pytest.mark.parametrize(("url", "reason"), REFUSED_IN_PRODUCTION)
def test_the_api_with_production_settings_refuses_private_webhooks_and_says_why(
    production_api: ServiceStack,
    carphone_distorted: Path,
    astronaut_png: Path,
    url: str,
    reason: str,
) -> None:
    name, key = production_api.new_tenant()
    with production_api.client(key) as client:
        response = client.post(
            "/v1/jobs",
            files=[
                ("options", (None, json.dumps({"webhook": url}), "application/json")),
                ("video", ("clip.mp4", carphone_distorted.read_bytes())),
                ("reference", ("face.png", astronaut_png.read_bytes())),
            ],
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("webhook_url_forbidden", "options.webhook")
    assert reason in error["message"], error["message"]
    assert production_api.objects(f"inputs/{name}/") == []
