"""SSRF guard for webhook targets: resolve once, refuse non-public addresses, pin the checked one.

A webhook URL comes from a client, and the worker POSTs to it from inside our network, so the URL
is treated as hostile:

* **URL.** Only ``http``/``https``, a host, no credentials, at most :data:`MAX_URL_LENGTH` characters.
  Numeric hosts are read the way ``inet_aton`` reads them (``2130706433``, ``0177.0.0.1``,
  ``0x7f.1`` are all 127.0.0.1), so no spelling slips past the address check.
* **Addresses.** Loopback, private, link-local (169.254.0.0/16: cloud metadata), shared (100.64/10),
  multicast, reserved, unspecified and site-local addresses are refused, and so is an IPv6 address
  that embeds one of them (IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, NAT64, Teredo).
  Every address a name resolves to must pass, so a name mixing public and private records is
  refused. An operator allowlist (CIDRs) opens chosen networks; ``allow_private`` (development
  only) opens loopback and private ranges, never link-local.
* **Resolution** goes through an injectable :data:`Resolver` (the system resolver by default), so
  tests and operators can substitute DNS. The API checks a URL when a job is created, and the
  worker checks it again at every delivery and connects to the address it checked, through the
  transport of ``jobs/webhooks/transport.py``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from jobs.errors import InvalidRequest

if TYPE_CHECKING:
    from jobs.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP address strings; raises OSError

MAX_URL_LENGTH = 2048  # longest accepted webhook URL

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # one label of an inet_aton-style address
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # RFC 6052, 8215
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated addresses
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses
_LOCAL_NAMES = ("localhost", "localhost.localdomain")  # names that are loopback by definition (RFC 6761)
# What allow_private opens: loopback, RFC 1918 and IPv6 unique-local, named one by one. Python's
# ``is_private`` also covers reserved space (240.0.0.0/4, 198.18.0.0/15, 192.0.0.0/24, ...),
# which is never a development receiver; link-local stays closed.
_DEV_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    )
)
_RESERVED_V4 = ipaddress.ip_network("192.0.0.0/24")  # IETF protocol assignments (RFC 6890), not all flagged


class ForbiddenTarget(InvalidRequest):
    """The webhook URL is malformed or points at an address the policy forbids."""

    code = "webhook_url_forbidden"


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``): every address of ``host``, IPv6 scope ids dropped."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


# ---------------------------------------------------------------------------------------------- addresses
def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host names, or None when ``host`` is a name.

    Accepts standard IPv4 and IPv6 literals and the legacy ``inet_aton`` spellings that resolvers
    and browsers still honour: 1 to 4 dot-separated parts, each decimal, octal (leading ``0``) or
    hex (``0x``), the last part filling the remaining bytes. A host made of numeric labels that is
    not a valid address (``1.2.3.4.5``, ``0999``) raises ForbiddenTarget.
    """
    name = host.lower().strip("[]")
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    malformed = ForbiddenTarget(f"the webhook host {host!r} is a malformed numeric address", field="webhook")
    if len(labels) > 4:
        raise malformed
    values = []
    for label in labels:
        if label.startswith("0x"):
            values.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise malformed
            values.append(int(label, 8))
        else:
            values.append(int(label))
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        raise malformed
    number = sum(v << (8 * (3 - i)) for i, v in enumerate(leading)) + last
    return ipaddress.IPv4Address(number)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, compatible, 6to4, NAT64, Teredo)."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _TRANSLATED or any(address in net for net in _NAT64):
        return low32
    if address in _COMPATIBLE and int(address) > 1:  # ::a.b.c.d, but not :: or ::1
        return low32
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def forbidden_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``loopback``, ``private``, ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            kind = forbidden_kind(inner)
            if kind is not None:
                return kind
            if address.ipv4_mapped is not None or any(address in net for net in _NAT64):
                return None  # a public IPv4 address reached through mapping or NAT64
        if address.is_site_local:
            return "site-local"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    )
    for attribute, kind in checks:
        if getattr(address, attribute):
            return kind
    if address in _RESERVED_V4:
        return "reserved"
    if not address.is_global:
        return "shared"  # e.g. 100.64.0.0/10, carrier-grade NAT
    return None


def _in_dev_networks(address: IPAddress) -> bool:
    """Whether ``address`` (or the IPv4 address it embeds) lies in a development network."""
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return any(a.version == n.version and a in n for a in (address, inner) if a is not None for n in _DEV_NETWORKS)


# ---------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class ParsedTarget:
    """A webhook URL that passed the checks that need no DNS."""

    scheme: str  # http | https
    host: str  # ASCII (IDNA) host name or address text, lower case, no brackets
    port: int  # explicit or the scheme's default
    explicit_port: bool  # the URL named the port
    path: str  # path, "/" when empty
    query: str  # query string, without "?"
    address: IPAddress | None  # the address of a numeric host; None for names

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host


@dataclass(frozen=True)
class ResolvedTarget:
    """Where to connect, and what to tell the server."""

    url: str  # the URL with the checked IP as host
    host_header: str  # original host[:port]
    server_name: str  # TLS SNI and certificate name
    address: IPAddress  # the checked address connected to


@dataclass(frozen=True)
class TargetPolicy:
    """Which webhook targets are allowed, and how names are resolved."""

    allow_private: bool = False  # development: loopback and private ranges allowed (never link-local)
    allow_cidrs: tuple[IPNetwork, ...] = ()  # operator allowlist of otherwise forbidden networks
    resolver: Resolver = field(default=system_resolver, compare=False)  # DNS; injectable

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = system_resolver) -> TargetPolicy:
        """The policy of the API (checks at submission) and of the webhook workers (checks at delivery)."""
        return cls(settings.webhook_allow_private, tuple(settings.webhook_allow_cidrs), resolver=resolver)

    def _allowlisted(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            candidates.append(inner)
        return any(a in net for a in candidates for net in self.allow_cidrs)

    def check_address(self, address: IPAddress, *, field: str = "webhook") -> None:
        """Raise ForbiddenTarget unless ``address`` is public, allowlisted, or (development) private."""
        if self._allowlisted(address):
            return
        kind = forbidden_kind(address)
        if kind is None or (self.allow_private and _in_dev_networks(address)):
            return
        raise ForbiddenTarget(f"webhook target address {address} is {kind}, not public", field=field)

    def check_url(self, url: str, *, field: str = "webhook") -> ParsedTarget:
        """Checks that need no DNS: length, scheme, host, port, no credentials, numeric hosts."""
        if len(url) > MAX_URL_LENGTH:
            raise ForbiddenTarget(f"the webhook URL is longer than {MAX_URL_LENGTH} characters", field=field)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ForbiddenTarget(f"the webhook URL is malformed: {exc}", field=field) from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ForbiddenTarget("the webhook must be an http(s) URL with a host", field=field)
        if "@" in parts.netloc:
            raise ForbiddenTarget("the webhook URL must not carry credentials", field=field)
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise ForbiddenTarget("the webhook URL contains control characters or spaces", field=field)
        try:
            host = parts.hostname.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ForbiddenTarget(f"the webhook host is not a valid name: {exc}", field=field) from exc
        address = parse_numeric_host(host)
        if address is not None:
            self.check_address(address, field=field)
            host = str(address)
        elif host.rstrip(".") in _LOCAL_NAMES or host.rstrip(".").endswith(".localhost"):
            self.check_address(ipaddress.IPv4Address("127.0.0.1"), field=field)
        return ParsedTarget(
            scheme=scheme,
            host=host,
            port=port or (443 if scheme == "https" else 80),
            explicit_port=port is not None,
            path=parts.path or "/",
            query=parts.query,
            address=address,
        )

    def resolve(self, url: str, *, field: str = "webhook") -> ResolvedTarget:
        """Resolve ``url``'s host once, check every address, and pin the first (raises ForbiddenTarget)."""
        parsed = self.check_url(url, field=field)
        if parsed.address is not None:
            addresses: list[IPAddress] = [parsed.address]
        else:
            try:
                answers = list(self.resolver(parsed.host, parsed.port))
                addresses = [ipaddress.ip_address(a.split("%")[0]) for a in answers]
            except (OSError, UnicodeError, ValueError) as exc:
                raise ForbiddenTarget(f"the webhook host {parsed.host} does not resolve: {exc}", field=field) from exc
            if not addresses:
                raise ForbiddenTarget(f"the webhook host {parsed.host} has no address", field=field)
        for address in addresses:
            self.check_address(address, field=field)
        chosen = addresses[0]
        ip_host = f"[{chosen}]" if chosen.version == 6 else str(chosen)
        netloc = f"{ip_host}:{parsed.port}" if parsed.explicit_port else ip_host
        return ResolvedTarget(
            url=urlunsplit((parsed.scheme, netloc, parsed.path, parsed.query, "")),
            host_header=parsed.host_header,
            server_name=parsed.host,
            address=chosen,
        )
