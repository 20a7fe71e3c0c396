"""The SSRF guard of webhooks, at the address: refused address forms, numeric spellings, allowlists,
and the refusals through the API (development and production settings).

Address checks run on :class:`TargetPolicy` directly; the API's run on a real service stack.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from jobs.settings import Settings
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy, parse_numeric_host
from tests.service.stack import ServiceStack

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
