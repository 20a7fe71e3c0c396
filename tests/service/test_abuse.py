"""Abuse and isolation: rate limits per API key, queued-job quotas, tenant isolation on every endpoint,
presigned URLs checked by the real ``weed`` (expiry, tampering), and no secrets in the logs.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ipfvr.devstack import wait_until
from jobs.logs import Redactor
from jobs.storage import Storage, output_key
from jobs.tenants.ratelimit import TokenBucket
from tests.service.receiver import WebhookReceiver
from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]
RATE, BURST = 0.5, 6  # the strict stack's rate limit: 6 requests at once, then one every 2 s


def submit(client: httpx.Client, video: Path, reference: Path, options: dict | None = None) -> httpx.Response:
    files = [("video", ("clip.mp4", video.read_bytes())), ("reference", ("face.png", reference.read_bytes()))]
    if options is not None:
        files.insert(0, ("options", (None, json.dumps(options), "application/json")))
    return client.post("/v1/jobs", files=files)


@pytest.fixture(scope="module")
def strict(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    """An API alone (no worker: jobs stay queued) with a small rate limit and a queued-job quota of 2."""
    return make_stack(
        restore_worker=False,
        service_worker=False,
        rate_limit_per_s=RATE,
        rate_limit_burst=BURST,
        max_queued_per_tenant=2,
    )


# ---------------------------------------------------------------------------------------------- rate limits
def test_token_bucket_refills_and_is_atomic_under_contention(redis_url: str, redis_prefix: Callable[[], str]) -> None:
    bucket = TokenBucket(redis.Redis.from_url(redis_url), redis_prefix(), rate_per_s=2.0, burst=5)
    assert [bucket.take("k", now=100.0).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = bucket.take("k", now=100.0)
    assert refused.retry_after_s == pytest.approx(0.5)
    assert bucket.take("k", now=100.5).allowed and not bucket.take("k", now=100.5).allowed
    assert bucket.take("other", now=100.5).allowed  # one bucket per key

    burst = 40
    contended = TokenBucket(redis.Redis.from_url(redis_url), redis_prefix(), rate_per_s=0.001, burst=burst)
    granted: list[bool] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(10):
            allowed = contended.take("shared", now=200.0).allowed
            with lock:
                granted.append(allowed)

    threads = [threading.Thread(target=spend) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == burst and len(granted) == 120


def test_each_api_key_is_rate_limited_with_retry_after(strict: ServiceStack) -> None:
    _, key = strict.new_tenant()
    other_key = strict.new_tenant()[1]
    with strict.client(key) as client, strict.client(other_key) as other:
        started, statuses = time.monotonic(), []
        while len(statuses) < 30 and 429 not in statuses:
            limited = client.get("/v1/jobs")
            statuses.append(limited.status_code)
        refilled = (time.monotonic() - started) * RATE  # tokens that trickled in meanwhile
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
        assert BURST <= len(statuses) - 1 <= BURST + refilled + 1
        assert limited.json()["error"]["code"] == "rate_limited"
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 1 / RATE
        assert client.post("/v1/webhooks/secret/rotate").status_code == 429  # every authenticated endpoint
        assert other.get("/v1/jobs").status_code == 200  # another key has its own bucket
        time.sleep(retry_after)
        assert client.get("/v1/jobs").status_code == 200


def test_queued_jobs_are_capped_per_tenant(strict: ServiceStack, carphone_distorted: Path, astronaut_png: Path) -> None:
    name, key = strict.new_tenant()
    with strict.client(key) as client:
        first, second = (submit(client, carphone_distorted, astronaut_png) for _ in range(2))
        assert first.status_code == second.status_code == 202
        refused = submit(client, carphone_distorted, astronaut_png)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_queued_jobs"
        assert len(strict.objects(f"inputs/{name}/")) == 4  # the refused upload left nothing behind
        assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").json()["status"] == "canceled"
        assert submit(client, carphone_distorted, astronaut_png).status_code == 202  # a slot freed up
    _, other_key = strict.new_tenant()
    with strict.client(other_key) as other:
        assert submit(other, carphone_distorted, astronaut_png).status_code == 202  # quotas are per tenant


# ---------------------------------------------------------------------------------------------- isolation
def tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_tenants_are_isolated_on_every_endpoint(
    stack: ServiceStack, receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name_a, key_a = stack.new_tenant()
    name_b, key_b = stack.new_tenant()
    with stack.client(key_a) as a, stack.client(key_b) as b:
        secret_a = a.get("/v1/webhooks/secret").json()["secret"]
        secret_b = b.get("/v1/webhooks/secret").json()["secret"]
        assert secret_a != secret_b
        inbox = receiver.inbox(secret_a)
        job = submit(
            a, carphone_distorted, astronaut_png, {"webhook": inbox.url, "webhook_events_filter": ["completed"]}
        ).json()
        done = stack.wait_job(a, job["id"], {"succeeded"})
        slow = submit(a, carphone_distorted, astronaut_png, {"prompt": "double:steps=400,step_s=0.05"}).json()
        b_job = submit(b, carphone_distorted, astronaut_png).json()

        def unchanged(record: dict) -> dict:
            """A's job without what every read makes anew (presigned URLs) or moves by itself (its webhook's
            delivery)."""
            return {k: v for k, v in record.items() if k not in ("output", "urls", "webhook")}

        # read, list (also with A's cursor), cancel, delete: another tenant's job does not exist, whether
        # finished or still queued/running; afterwards A reads both jobs as they were
        for target in (job["id"], slow["id"]):
            before = unchanged(a.get(f"/v1/jobs/{target}").json())
            for response in (
                b.get(f"/v1/jobs/{target}"),
                b.post(f"/v1/jobs/{target}/cancel"),
                b.delete(f"/v1/jobs/{target}"),
            ):
                assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
            after = unchanged(a.get(f"/v1/jobs/{target}").json())
            if target == slow["id"]:  # it may have moved on by itself meanwhile, never towards a cancel
                assert not after["cancel_requested"] and after["status"] in ("queued", "processing"), after
                before = {
                    k: v
                    for k, v in before.items()
                    if k not in ("status", "progress", "queue_position", "started_at", "attempts", "metrics")
                }
                after = {k: v for k, v in after.items() if k in before}
            assert after == before
        assert a.post(f"/v1/jobs/{slow['id']}/cancel").status_code == 200
        assert [j["id"] for j in b.get("/v1/jobs").json()["data"]] == [b_job["id"]]
        submit(a, carphone_distorted, astronaut_png)
        cursor = a.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
        assert cursor is not None
        assert job["id"] not in [j["id"] for j in b.get("/v1/jobs", params={"cursor": cursor}).json()["data"]]
        # uploads: A's real uploads cannot be named by B, and still work for A afterwards
        video_bytes, photo_bytes = carphone_distorted.read_bytes(), astronaut_png.read_bytes()
        upload_a = a.post("/v1/uploads", json={"purpose": "video", "size": len(video_bytes)}).json()
        photo_a = a.post("/v1/uploads", json={"purpose": "reference", "size": len(photo_bytes)}).json()
        assert httpx.put(upload_a["url"], content=video_bytes).status_code == 200
        assert httpx.put(photo_a["url"], content=photo_bytes).status_code == 200
        inputs = {"inputs": {"video": upload_a["id"], "references": [photo_a["id"]]}}
        named = b.post("/v1/jobs", json=inputs)
        assert named.status_code == 422 and named.json()["error"]["code"] == "upload_not_found"
        assert named.json()["error"]["field"] == "inputs.video"
        from_uploads = a.post("/v1/jobs", json=inputs)
        assert from_uploads.status_code == 202, from_uploads.text
        stack.wait_job(a, from_uploads.json()["id"], {"succeeded"})
        # webhook secrets: B's rotation leaves A's secret alone; A's deliveries verify with A's secret only
        b.post("/v1/webhooks/secret/rotate")
        assert a.get("/v1/webhooks/secret").json() == {"secret": secret_a, "previous_expires_at": None}
        delivered = inbox.wait_for(lambda items: len(items) >= 1)
        assert all(r.verified for r in delivered)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret_b).verify(delivered[0].body, delivered[0].headers)

    # presigned URLs: valid as given, refused by weed once altered in any way
    url = done["output"]["video_url"]
    assert httpx.get(url).status_code == 200
    b_video = output_key(name_b, b_job["id"])
    a_video = output_key(name_a, job["id"])
    query = dict(parse_qsl(urlsplit(url).query))
    signature = query["X-Amz-Signature"]
    assert query["X-Amz-Expires"] == str(stack.settings.presign_expires_s)  # every URL is short-lived
    attempts = {
        "another tenant's object": url.replace(a_video, b_video),
        "a longer expiry": tampered(url, **{"X-Amz-Expires": "604800"}),
        "an altered signature": tampered(url, **{"X-Amz-Signature": signature[::-1]}),
        "no signature": url.split("?")[0],
    }
    for what, forged in attempts.items():
        assert httpx.get(forged).status_code == 403, what
    put = httpx.put(upload_a["url"].replace(f"uploads/{name_a}/", f"uploads/{name_b}/"), content=b"x")
    assert put.status_code == 403


def test_presigned_urls_expire(stack: ServiceStack) -> None:
    """weed refuses a presigned GET after its expiry (the API's lifetime is settings.presign_expires_s)."""
    storage = Storage.from_settings(stack.settings)
    key = f"outputs/expiry-{secrets.token_hex(3)}/restored.mp4"
    storage.put_bytes(key, b"restored", "video/mp4")
    short = storage.presign_get(key, expires_s=1)
    assert httpx.get(storage.presign_get(key, expires_s=600).url).content == b"restored"  # the same URL, longer
    time.sleep(2.1)  # past the short one's expiry (a loaded machine only sleeps longer)
    expired = httpx.get(short.url)
    assert expired.status_code == 403 and b"expired" in expired.content.lower()
    storage.delete([key])


# ---------------------------------------------------------------------------------------------- logs
@pytest.mark.slow
def test_logs_are_json_and_carry_no_secret(
    make_stack: Callable[..., ServiceStack], receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    """A whole flow at DEBUG: no API key, webhook secret, receiver token or presigned signature in any log."""
    stack = make_stack(log_level="DEBUG")
    _, key = stack.new_tenant()
    token = "tok" + secrets.token_hex(12)
    with stack.client(key) as client:
        secret = client.get("/v1/webhooks/secret").json()["secret"]
        inbox = receiver.inbox(secret)
        options = {"webhook": f"{inbox.url}?token={token}", "webhook_events_filter": ["completed"]}
        job = submit(client, carphone_distorted, astronaut_png, options).json()
        done = stack.wait_job(client, job["id"], {"succeeded"})
        upload = client.post("/v1/uploads", json={"purpose": "reference", "size": 10}).json()
        rotated = client.post("/v1/webhooks/secret/rotate").json()["secret"]
        client.get("/v1/jobs", params={"api_key": key, "limit": 1})  # a client that leaks its key in the URL
    with stack.client("ipfvr_" + secrets.token_urlsafe(32)) as stranger:
        assert stranger.get("/v1/jobs").status_code == 401
    inbox.wait_for(lambda received: len(received) >= 1, timeout_s=60)  # the completed webhook arrived ...
    service_log = stack.tmp / "logs" / "service.log"
    wait_until(
        lambda: "token=[REDACTED]" in service_log.read_text(), timeout_s=60, what="the delivery's log line"
    )  # ... and its delivery was logged
    signatures = [
        dict(parse_qsl(urlsplit(u).query))["X-Amz-Signature"]
        for u in (done["output"]["video_url"], done["output"]["report_url"], upload["url"])
    ]
    forbidden = [key, secret, rotated, token, *signatures, stack.settings.s3_secret_access_key.get_secret_value()]  # type: ignore[union-attr]

    logs = {path.name: path.read_text() for path in (stack.tmp / "logs").glob("*.log")}
    assert {"api.log", "restore.log", "service.log"} <= set(logs)
    for name, text in logs.items():
        for value in forbidden:
            assert value not in text, f"{name} leaks {value[:10]}..."
    for name in ("restore.log", "service.log"):  # the Celery workers log through the same redacting handler
        worker_records = [json.loads(line) for line in logs[name].splitlines() if line.startswith("{")]
        assert worker_records and all(r.get("service") == "worker" for r in worker_records), name
    records = [json.loads(line) for line in logs["api.log"].splitlines() if line.strip()]
    access = [r for r in records if r.get("event") == "http_request"]
    assert {r["route"] for r in access} >= {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/uploads", "/v1/webhooks/secret"}
    leaked_query = next(r for r in access if "api_key" in r["query"])
    assert re.search(r"api_key=\[REDACTED\]", leaked_query["query"])
    assert all(r["tenant"] for r in access if r["status"] < 400 and r["route"].startswith("/v1/"))
    created = next(r for r in records if r.get("event") == "job_created")
    assert created["job_id"] == job["id"] and created["webhook"].endswith("token=[REDACTED]")
    assert any(r["status"] == 401 and r["tenant"] is None for r in access)
    assert "token=[REDACTED]" in logs["service.log"]  # httpx's request line of the delivery, redacted


def test_the_redactor_removes_every_kind_of_secret() -> None:
    redactor = Redactor(["s3-secret-value-123"])
    key, whsec = "ipfvr_" + "k" * 43, "whsec_" + "Zm9vYmFyYmF6cXV4" * 2
    presigned = (
        "https://s3.example/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F2026"
        "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=abc123def"
    )
    text = redactor(
        f"key {key} secret {whsec} url {presigned} auth Bearer {key[6:]} basic Basic dXNlcjpwdw== "
        "hook https://user:pw@hooks.example/x?token=t0k&id=7 aws AKIAIOSFODNN7EXAMPLE s3-secret-value-123 "
        "AWS4-HMAC-SHA256 Credential=AKID/2026/us-east-1/s3/aws4_request, Signature=feedbeef"
    )
    for secret in (
        key,
        key[6:],
        whsec[6:],
        "abc123def",
        "AKIAIOSFODNN7EXAMPLE",
        "dXNlcjpwdw",
        "user:pw",
        "t0k",
        "s3-secret-value-123",
        "feedbeef",
        "AKID/2026",
    ):
        assert secret not in text, secret
    assert "X-Amz-Expires=3600" in text and "id=7" in text and "ipfvr_[REDACTED]" in text  # the rest stays readable
    nested = redactor.value({"authorization": "anything", "headers": [{"x": f"Bearer {key}"}], "n": 3})
    assert nested == {"authorization": "[REDACTED]", "headers": [{"x": "Bearer [REDACTED]"}], "n": 3}
