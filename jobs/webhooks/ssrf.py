"""SSRF guard for webhook targets: resolve once, refuse non-public addresses, connect to the checked one.

A target may not reach loopback, private, link-local (169.254.0.0/16, cloud metadata), shared,
reserved, multicast or unspecified addresses, unless the operator allows it (a CIDR allowlist,
or ``webhook_allow_private`` for development). Every resolved address must pass, so a name that
mixes public and private records is refused. The request then goes to the checked IP with the
original ``Host`` header and TLS server name, so a second DNS answer cannot redirect it, and
redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from jobs.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForbiddenTarget(InvalidRequest):
    """The webhook URL is malformed or points at an address the policy forbids."""

    code = "webhook_url_forbidden"


@dataclass(frozen=True)
class ResolvedTarget:
    """Where to connect, and what to tell the server."""

    url: str  # the URL with the checked IP as host
    host_header: str  # original host[:port]
    server_name: str  # TLS SNI and certificate name
    address: IPAddress


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool = False  # development: loopback and private ranges allowed
    allow_cidrs: tuple[IPNetwork, ...] = ()  # operator allowlist

    def check_address(self, address: IPAddress, *, field: str = "webhook") -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allow_cidrs):
            return
        public = address.is_global and not (address.is_multicast or address.is_unspecified or address.is_reserved)
        if public:
            return
        if self.allow_private and (address.is_private or address.is_loopback) and not address.is_link_local:
            return  # link-local (cloud metadata) stays forbidden even in development
        raise ForbiddenTarget(f"webhook target address {address} is not public", field=field)

    def check_url(self, url: str, *, field: str = "webhook") -> None:
        """Checks that need no DNS (API side): scheme, host, no credentials, literal IPs."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ForbiddenTarget("the webhook must be an http(s) URL with a host", field=field)
        if parts.username or parts.password:
            raise ForbiddenTarget("the webhook URL must not carry credentials", field=field)
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            if parts.hostname.lower() in ("localhost", "localhost.localdomain") and not self.allow_private:
                raise ForbiddenTarget("the webhook host is loopback", field=field) from None
            return
        self.check_address(literal, field=field)

    def resolve(self, url: str) -> ResolvedTarget:
        """Resolve ``url``'s host once and check every address (raises ForbiddenTarget)."""
        self.check_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ForbiddenTarget(f"the webhook host {host} does not resolve: {exc}", field="webhook") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]  # drop IPv6 scope ids
        for address in addresses:
            self.check_address(address)
        chosen = addresses[0]
        ip_host = f"[{chosen}]" if chosen.version == 6 else str(chosen)
        netloc = f"{ip_host}:{parts.port}" if parts.port else ip_host
        return ResolvedTarget(
            url=urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
            host_header=parts.netloc,
            server_name=host,
            address=chosen,
        )
