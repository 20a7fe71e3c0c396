"""Pure parts of the job service: settings, ids, sniffing, signing, the SSRF guard, retry policy."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ipfvr_core.errors import IPFVRError
from jobs.errors import InvalidRequest
from jobs.ids import JOB_ID, new_id
from jobs.media.sniff import Kind, sniff
from jobs.model import Status
from jobs.settings import Settings
from jobs.storage import StorageUnavailable
from jobs.tenants.accounts import WebhookSecrets, new_webhook_secret
from jobs.webhooks.policy import RetryPolicy
from jobs.webhooks.signing import signed_headers
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy


# ---------------------------------------------------------------------------------------------- settings
def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ValidationError, match="IPFVR_SECRET_KEY"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="IPFVR_SECRET_KEY"):
        Settings(env="production", secret_key="short")
    ok = Settings(env="production", secret_key="x" * 40)
    assert ok.effective_secret_key == b"x" * 40


def test_development_has_a_fixed_secret_production_uses_its_own() -> None:
    development = Settings().effective_secret_key
    # fixed: the same in another process (keys made by `ipfvr keys create` work in `ipfvr dev`)
    child = subprocess.run(
        [sys.executable, "-c", "from jobs.settings import Settings; print(Settings().effective_secret_key.hex())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bytes.fromhex(child.stdout.strip()) == development and len(development) >= 32
    assert Settings(env="production", secret_key="y" * 32).effective_secret_key == b"y" * 32


def test_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(visibility_timeout_s=600, job_time_limit_s=600)
    assert Settings(visibility_timeout_s=700, job_time_limit_s=600, job_kill_grace_s=60).hard_time_limit_s == 660


@pytest.mark.parametrize(
    "bad",
    [
        {"redis_url": "http://nope"},
        {"heartbeat_s": 10, "lease_ttl_s": 15},
        {"default_engine": "mystery"},
        {"s3_access_key_id": "only-one-half"},
        {"max_references": 0},
        {"env": "production", "secret_key": "z" * 40, "webhook_allow_private": True},
    ],
)
def test_bad_settings_fail_fast(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPFVR_MAX_REFERENCES", "7")
    monkeypatch.setenv("IPFVR_ENGINES", '["baseline"]')
    monkeypatch.setenv("IPFVR_DEFAULT_ENGINE", "baseline")
    monkeypatch.setenv("IPFVR_WORKER_ENGINE", "baseline")
    settings = Settings()
    assert settings.max_references == 7 and settings.engines == ["baseline"]
    monkeypatch.setenv("IPFVR_MAX_REFERENCES", "many")
    with pytest.raises(ValidationError, match="max_references"):
        Settings()


# ---------------------------------------------------------------------------------------------- model, ids
def test_terminal_has_one_definition() -> None:
    assert {s for s in Status if s.is_terminal} == {Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED}
    assert {s for s in Status if s.is_running} == {Status.STARTING, Status.PROCESSING}


def test_service_errors_are_library_errors_with_their_own_codes() -> None:
    """One error base: a service error carries code, message and field as the library's errors do."""
    error = StorageUnavailable("reading inputs/acme/job/video failed", field="inputs.video")
    assert isinstance(error, IPFVRError)
    assert (error.code, error.message, error.field) == (
        "storage_unavailable",
        "reading inputs/acme/job/video failed",
        "inputs.video",
    )
    assert InvalidRequest("bad cursor", code="invalid_cursor").code == "invalid_cursor"


def test_ids_sort_by_creation_time() -> None:
    ids = [new_id("job", now_ms=ms) for ms in (1_000, 2_000, 2_001, 9_999_999_999)]
    assert ids == sorted(ids)
    assert all(JOB_ID.match(i) for i in ids)
    assert len({new_id("job", now_ms=5) for _ in range(100)}) == 100


# ---------------------------------------------------------------------------------------------- sniffing
@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x20ftypisom" + bytes(52), (Kind.VIDEO, "video/mp4")),
        (b"\x00\x00\x00\x14ftypqt  " + bytes(52), (Kind.VIDEO, "video/quicktime")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(48), (Kind.VIDEO, "video/webm")),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", (Kind.VIDEO, "video/x-matroska")),
        (b"\x89PNG\r\n\x1a\n" + bytes(8), (Kind.IMAGE, "image/png")),
        (b"\xff\xd8\xff\xe0" + bytes(8), (Kind.IMAGE, "image/jpeg")),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", (Kind.IMAGE, "image/webp")),
        (b"RIFF\x10\x00\x00\x00AVI LIST", None),
        (b"GIF89a" + bytes(10), None),
        (b"<html><body>", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, expected: tuple[Kind, str] | None) -> None:
    assert sniff(head) == expected


def test_sniff_real_files(carphone_distorted, astronaut_png) -> None:  # noqa: ANN001 (fixtures)
    assert sniff(carphone_distorted.read_bytes()[:64]) == (Kind.VIDEO, "video/mp4")
    assert sniff(astronaut_png.read_bytes()[:64]) == (Kind.IMAGE, "image/png")


# ---------------------------------------------------------------------------------------------- signing
def test_signatures_verify_with_standardwebhooks_and_detect_tampering() -> None:
    secret = new_webhook_secret()
    body = b'{"id":"job_x","status":"succeeded"}'
    headers = signed_headers([secret], "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"id": "job_x", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)
    stale = signed_headers([secret], "msg_1", int(time.time()) - 3600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_during_rotation_both_secrets_verify() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    secrets = WebhookSecrets(current=new, previous=old, previous_expires_at=1_000.0)
    assert secrets.signing(999.0) == [new, old]
    assert secrets.signing(1_000.0) == [new]
    body = b"{}"
    headers = signed_headers(secrets.signing(999.0), "msg_2", int(time.time()), body)
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)


# ---------------------------------------------------------------------------------------------- SSRF
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/x",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "https:///nohost",
    ],
)
def test_forbidden_webhook_targets(url: str) -> None:
    with pytest.raises(ForbiddenTarget):
        TargetPolicy().check_url(url)


def test_resolution_checks_every_address_and_pins_the_checked_one() -> None:
    with pytest.raises(ForbiddenTarget):
        TargetPolicy().resolve("http://localhost:9/hook")  # resolves to loopback
    target = TargetPolicy(allow_private=True).resolve("http://localhost:9/hook?x=1")
    assert target.address.is_loopback
    host = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    assert target.url == f"http://{host}:9/hook?x=1"  # the checked address, pinned; path and query kept
    assert target.host_header == "localhost:9" and target.server_name == "localhost"


def test_operator_allowlist() -> None:
    policy = TargetPolicy(allow_cidrs=(ipaddress.ip_network("10.1.0.0/16"),))
    policy.check_url("http://10.1.2.3/hook")
    with pytest.raises(ForbiddenTarget):
        policy.check_url("http://10.2.0.1/hook")
    TargetPolicy().check_url("https://hooks.example.com/ipfvr")  # public names pass the DNS-free check


# ---------------------------------------------------------------------------------------------- retries
def test_backoff_doubles_up_to_the_cap_and_gives_up() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=5, max_s=30)
    assert [policy.delay(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]
    assert policy.next_attempt(attempts=1, best_effort=False, permanent=False, now=100) == 105
    assert policy.next_attempt(attempts=5, best_effort=False, permanent=False, now=100) is None
    assert policy.next_attempt(attempts=1, best_effort=True, permanent=False, now=100) is None
    assert policy.next_attempt(attempts=1, best_effort=False, permanent=True, now=100) is None
