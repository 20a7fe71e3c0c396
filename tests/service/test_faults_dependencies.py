"""Dependencies that fail under a running service: S3 during the result upload, and webhook receivers.

The stack of this module reaches the session's weed S3 through a :class:`FaultProxy` that the
tests take down (every connection reset, as when S3 dies), and its service worker gives webhook
receivers 0.5 s to answer. The test reads the bucket directly, around the proxy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipfvr.devstack import S3Server
from jobs.settings import MiB
from jobs.storage import output_key, report_key
from tests.service.fault_tools import FaultProxy, FlakyReceiver, start_stack, wait_for
from tests.service.stack import ServiceStack

PAD = 6 * MiB  # the result is a multipart upload of two parts (5 MiB parts)
RETRY_BASE_S = 0.25
RETRY_HORIZON_S = 4.0


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(int(s3_server.endpoint_url.rsplit(":", 1)[1]))
    yield p
    p.close()


@pytest.fixture(scope="module")
def deps(
    s3_server: S3Server,
    redis_url: str,
    redis_prefix: Callable[[], str],
    proxy: FaultProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceStack]:
    service = start_stack(
        redis_url=redis_url,
        s3=s3_server,
        s3_endpoint_url=proxy.url,
        prefix=redis_prefix(),
        tmp=tmp_path_factory.mktemp("deps"),
        upload_part_bytes=5 * MiB,
        s3_max_attempts=1,
        storage_retry_base_s=RETRY_BASE_S,
        storage_retry_horizon_s=RETRY_HORIZON_S,
        webhook_timeout_s=0.5,
        # An upload in progress is only presumed dead after the hard time limit: keep that far beyond
        # the waits below, so that what they see is the abort of an upload known to be abandoned.
        job_time_limit_s=30,
        job_kill_grace_s=2,
        visibility_timeout_s=40,
    )
    yield service
    service.stack.stop()


@pytest.fixture()
def client(deps: ServiceStack) -> Iterator[tuple[str, httpx.Client]]:
    name, key = deps.new_tenant()
    with deps.client(key) as c:
        yield name, c


def submit(client: httpx.Client, video: Path, reference: Path, **options: object) -> dict[str, Any]:
    files = [
        ("options", (None, json.dumps(options), "application/json")),
        ("video", ("clip.mp4", video.read_bytes())),
        ("reference", ("face.png", reference.read_bytes())),
    ]
    response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    return response.json()


def trip_during_upload(deps: ServiceStack, client: httpx.Client, job_id: str, proxy: FaultProxy) -> None:
    """Once the job restores (its inputs are downloaded), let S3 die 1 MiB into the result upload."""

    def restoring() -> bool:
        progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
        return progress is not None and progress["stage"] == "restore"

    wait_for(restoring, timeout_s=20, what="the restore stage")
    proxy.trip_after(1 * MiB)
    assert proxy.tripped.wait(timeout=20), "the upload never started"


def retry_delays(deps: ServiceStack, job_id: str) -> list[float]:
    log = (deps.stack.log_dir / "restore.log").read_text()
    pattern = rf"storing the result of job {job_id} failed \(attempt \d+\): .*?; retrying in ([\d.]+) s"
    return [float(d) for d in re.findall(pattern, log)]


def pending_uploads(deps: ServiceStack, prefix: str) -> list[str]:
    listed = deps.s3.list_multipart_uploads(Bucket=deps.bucket, Prefix=prefix)
    return [u["UploadId"] for u in listed.get("Uploads", [])]


# ---------------------------------------------------------------------------------------------- S3
def test_s3_down_during_the_result_upload_is_retried_with_backoff_until_it_returns(
    deps: ServiceStack,
    client: tuple[str, httpx.Client],
    proxy: FaultProxy,
    carphone_distorted: Path,
    astronaut_png: Path,
) -> None:
    name, c = client
    job = submit(c, carphone_distorted, astronaut_png, prompt=f"double:steps=8,step_s=0.1,pad_bytes={PAD}")
    trip_during_upload(deps, c, job["id"], proxy)
    # S3 stays down until the worker has backed off twice (a condition, not a duration)
    wait_for(lambda: len(retry_delays(deps, job["id"])) >= 2, timeout_s=60, what="two retries while S3 is down")
    refused = proxy.refused
    assert len(pending_uploads(deps, f"outputs/{name}/")) == 1  # the upload S3 died in (seen around the proxy)
    proxy.come_up()
    done = deps.wait_job(c, job["id"], {"succeeded", "failed"}, timeout_s=20)
    assert done["status"] == "succeeded", done
    assert refused >= 1
    delays = retry_delays(deps, job["id"])
    assert len(delays) >= 2 and delays[:2] == [RETRY_BASE_S, 2 * RETRY_BASE_S]  # exponential backoff
    head = deps.s3.head_object(Bucket=deps.bucket, Key=output_key(name, job["id"]))
    assert head["ContentLength"] == carphone_distorted.stat().st_size + PAD
    # The upload S3 died in could not be aborted then: the sweep aborts it now that S3 is back.
    wait_for(lambda: pending_uploads(deps, f"outputs/{name}/") == [], timeout_s=8, what="the abandoned upload")


def test_s3_that_stays_down_fails_the_job_with_a_stable_code_and_leaves_nothing_behind(
    deps: ServiceStack,
    client: tuple[str, httpx.Client],
    proxy: FaultProxy,
    carphone_distorted: Path,
    astronaut_png: Path,
) -> None:
    name, c = client
    job = submit(c, carphone_distorted, astronaut_png, prompt=f"double:steps=8,step_s=0.1,pad_bytes={PAD}")
    trip_during_upload(deps, c, job["id"], proxy)
    try:
        done = deps.wait_job(c, job["id"], {"succeeded", "failed"}, timeout_s=30)
        assert len(pending_uploads(deps, f"outputs/{name}/{job['id']}/")) == 1  # not abortable while S3 is down
    finally:
        proxy.come_up()
    assert done["status"] == "failed" and done["error"]["code"] == "storage_unavailable", done
    assert done["output"] is None
    # The worker's own log: exponential waits, given up before the next one would pass the horizon.
    delays = retry_delays(deps, job["id"])
    assert len(delays) >= 3 and delays == [RETRY_BASE_S * 2**i for i in range(len(delays))], delays
    assert sum(delays) <= RETRY_HORIZON_S
    prefix = f"outputs/{name}/{job['id']}/"
    wait_for(lambda: pending_uploads(deps, prefix) == [], timeout_s=8, what="the abandoned upload")
    assert deps.objects(prefix) == []
    for key in (output_key(name, job["id"]), report_key(name, job["id"])):
        assert deps.s3.list_objects_v2(Bucket=deps.bucket, Prefix=key).get("KeyCount") == 0


# ---------------------------------------------------------------------------------------------- webhooks
def job_webhook(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's ``webhook`` delivery state ({} before the first attempt)."""
    return c.get(f"/v1/jobs/{job_id}").json()["webhook"] or {}


def test_a_webhook_receiver_down_then_failing_then_slow_gets_the_event_once_it_recovers(
    deps: ServiceStack,
    client: tuple[str, httpx.Client],
    carphone_distorted: Path,
    astronaut_png: Path,
) -> None:
    _, c = client
    receiver = FlakyReceiver(c.get("/v1/webhooks/secret").json()["secret"], slow_s=1.5, script=["error", "slow"])
    job = submit(c, carphone_distorted, astronaut_png, webhook=receiver.url, webhook_events_filter=["completed"])
    try:
        assert deps.wait_job(c, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
        # Nothing listens yet: the first attempt is refused, and the job says so.
        wait_for(lambda: job_webhook(c, job["id"]).get("attempts") == 1, timeout_s=10, what="attempt 1")
        state = job_webhook(c, job["id"])
        assert state["state"] == "retrying" and "Connect" in state["last_error"] and state["next_attempt_at"]
        receiver.start()
        wait_for(lambda: job_webhook(c, job["id"]).get("state") == "delivered", timeout_s=20, what="the delivery")
        arrivals = receiver.snapshot()
        assert [a.answer for a in arrivals] == ["error", "slow", "ok"]
        assert {a.webhook_id for a in arrivals} == {f"msg_{job['id'][4:]}_completed"}
        assert all(a.verified for a in arrivals)
        # Exponential backoff: 0.5 s after attempt 1, then 1 s, then 2 s (plus the dispatch period). The
        # receiver stamps an arrival once it has read the request, which a loaded machine delays, so
        # the gaps are checked with 0.5 s (1 s after the slow attempt's 0.5 s timeout) to spare.
        assert arrivals[1].at - arrivals[0].at >= 1.0 - 0.5
        assert arrivals[2].at - arrivals[1].at >= 0.5 + 2.0 - 1.0
        state = job_webhook(c, job["id"])
        assert state["attempts"] == 4 and state["last_error"].startswith("ReadTimeout")
        time.sleep(1.5)
        assert len(receiver.snapshot()) == 3  # delivered: never sent again
    finally:
        receiver.stop()


def test_a_webhook_receiver_that_keeps_failing_is_given_up_after_the_configured_attempts(
    deps: ServiceStack,
    client: tuple[str, httpx.Client],
    carphone_distorted: Path,
    astronaut_png: Path,
) -> None:
    _, c = client
    receiver = FlakyReceiver(c.get("/v1/webhooks/secret").json()["secret"], then="error")
    receiver.start()
    try:
        job = submit(c, carphone_distorted, astronaut_png, webhook=receiver.url, webhook_events_filter=["completed"])
        wait_for(lambda: job_webhook(c, job["id"]).get("state") == "failed", timeout_s=25, what="giving up")
        state = job_webhook(c, job["id"])
        max_attempts = deps.settings.webhook_max_attempts
        assert state["attempts"] == max_attempts and state["last_error"] == "HTTP 500"
        assert state["next_attempt_at"] is None
        time.sleep(2.5)  # longer than the last backoff delay
        arrivals = receiver.snapshot()
        assert len(arrivals) == max_attempts and len({a.webhook_id for a in arrivals}) == 1
    finally:
        receiver.stop()
