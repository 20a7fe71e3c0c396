"""Jobs through real Celery workers: round trip, signed webhooks, cancel, readiness, redelivery after SIGKILL.

The restore workers here run the copy double (tests/service/doubles.py); the real restorer has
its own end-to-end test in test_service_e2e.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import httpx

from ipfvr.devstack import wait_until
from jobs.store.workers import WorkerRegistry, WorkerState
from tests.service.doubles import COPY_WARNING
from tests.service.receiver import Received, WebhookReceiver
from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]


def submit(client: httpx.Client, video: Path, reference: Path, **options: object) -> dict:
    files = [
        ("options", (None, json.dumps(options), "application/json")),
        ("video", ("clip.mp4", video.read_bytes())),
        ("reference", ("face.png", reference.read_bytes())),
    ]
    response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    return response.json()


def events(received: list[Received]) -> list[str]:
    return [r.webhook_id.rsplit("_", 2)[-1] if "_progress_" not in r.webhook_id else "progress" for r in received]


def test_round_trip_with_signed_webhooks(
    stack: ServiceStack, tenant: Tenant, receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"])
    job = submit(client, carphone_distorted, astronaut_png, webhook=inbox.url, prompt="double:steps=6,step_s=0.15")
    done = stack.wait_job(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["percent"] == 100.0 and done["attempts"] == 1
    assert done["metrics"]["queue_time"] >= 0 and done["metrics"]["predict_time"] > 0.5
    assert done["output"]["report"]["warnings"] == [COPY_WARNING] and "frames" not in done["output"]["report"]
    assert httpx.get(done["output"]["video_url"]).content == carphone_distorted.read_bytes()
    report = httpx.get(done["output"]["report_url"]).json()
    assert [row["index"] for row in report["frames"]] == [0]  # the full report keeps per-frame rows
    received = inbox.wait_for(lambda items: any(r.webhook_id.endswith("_completed") for r in items))
    assert all(r.verified for r in received)
    kinds = Counter(events(received))  # deliveries run in parallel: arrival order is not guaranteed
    assert kinds["start"] == 1 and kinds["completed"] == 1 and kinds["progress"] >= 1
    completed = next(r for r in received if r.webhook_id.endswith("_completed"))
    assert completed.payload["id"] == job["id"] and completed.payload["status"] == "succeeded"
    assert completed.payload["output"]["video_url"]
    assert len({r.webhook_id for r in received}) == len(received)


def test_terminal_webhooks_are_retried_with_the_same_id(
    stack: ServiceStack, tenant: Tenant, receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"], fail_first=2)
    job = submit(client, carphone_distorted, astronaut_png, webhook=inbox.url, webhook_events_filter=["completed"])
    received = inbox.wait_for(lambda items: len(items) >= 3, timeout_s=30)
    assert {r.webhook_id for r in received} == {f"msg_{job['id'][4:]}_completed"}
    assert all(r.verified for r in received)
    time.sleep(1.5)
    assert len(inbox.snapshot()) == 3  # delivered on the third attempt, then never again


def test_cancel_a_queued_job_at_once(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    blocker = submit(client, carphone_distorted, astronaut_png, prompt="double:steps=30,step_s=0.1")
    stack.wait_job(client, blocker["id"], {"processing"})
    queued = submit(client, carphone_distorted, astronaut_png)
    assert client.get(f"/v1/jobs/{queued['id']}").json()["queue_position"] == 0
    canceled = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert canceled.json()["completed_at"] is not None and canceled.json()["error"] is None
    again = client.post(f"/v1/jobs/{queued['id']}/cancel").json()  # a terminal job: no-op
    assert again["status"] == "canceled" and again["completed_at"] == canceled.json()["completed_at"]
    client.post(f"/v1/jobs/{blocker['id']}/cancel")
    stack.wait_job(client, blocker["id"], {"canceled"})
    assert client.get(f"/v1/jobs/{queued['id']}").json()["attempts"] == 0  # never started


def test_cancel_a_running_job_cooperatively(
    stack: ServiceStack, tenant: Tenant, receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name, client = tenant
    inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"])
    job = submit(
        client,
        carphone_distorted,
        astronaut_png,
        prompt="double:steps=100,step_s=0.1",
        webhook=inbox.url,
        webhook_events_filter=["completed"],
    )
    stack.wait_job(client, job["id"], {"processing"})
    requested = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert requested["status"] in ("starting", "processing") and requested["cancel_requested"] is True
    done = stack.wait_job(client, job["id"], {"canceled", "succeeded", "failed"}, timeout_s=30)
    assert done["status"] == "canceled"  # uninterrupted, the job would have run 10 s and succeeded
    assert stack.objects(f"outputs/{name}/") == []
    received = inbox.wait_for(lambda items: len(items) >= 1)
    assert received[0].verified and received[0].payload["status"] == "canceled"


def test_a_job_that_ignores_cancel_is_terminated(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    job = submit(client, carphone_distorted, astronaut_png, prompt="double:steps=50,step_s=0.1,ignore_cancel=1")
    stack.wait_job(client, job["id"], {"processing"})
    client.post(f"/v1/jobs/{job['id']}/cancel")
    grace = stack.settings.cancel_grace_s
    done = stack.wait_job(client, job["id"], {"canceled", "succeeded", "failed"}, timeout_s=grace + 5)
    assert done["status"] == "canceled"
    stack.wait_worker("restore", WorkerState.READY)  # the killed pool process was replaced and reloaded
    after = submit(client, carphone_distorted, astronaut_png)
    assert stack.wait_job(client, after["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_worker_is_ready_only_after_its_model_loads(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    registry = WorkerRegistry(stack.redis, stack.settings.key_prefix)
    worker = stack.start_restore_worker("slowload", engine="slowload", IPFVR_TEST_DOUBLE_LOAD_S="3")
    try:
        stack.wait_worker("slowload", WorkerState.STARTING)
        job = submit(client, carphone_distorted, astronaut_png, engine="slowload")
        time.sleep(1.0)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"  # no model, no work
        stack.wait_worker("slowload", WorkerState.READY, timeout_s=20)
        info = next(w for w in registry.list() if w.hostname.startswith("slowload@"))
        assert info.model_load_s is not None and info.model_load_s >= 3
        done = stack.wait_job(client, job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        assert done["metrics"]["queue_time"] >= 2.5  # it waited for the model
    finally:
        worker.stop()


def test_a_worker_whose_model_fails_to_load_reports_failed_and_takes_no_jobs(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    registry = WorkerRegistry(stack.redis, stack.settings.key_prefix)
    worker = stack.start_restore_worker(
        "broken", engine="broken", restorer="tests.service.doubles:load_broken_restorer"
    )
    try:
        stack.wait_worker("broken", WorkerState.FAILED)
        info = next(w for w in registry.list() if w.hostname.startswith("broken@"))
        assert "weights" in (info.error or "")
        job = submit(client, carphone_distorted, astronaut_png, engine="broken")
        time.sleep(2.0)
        after = client.get(f"/v1/jobs/{job['id']}").json()
        assert after["status"] == "queued" and after["attempts"] == 0  # left for a healthy worker
        assert client.get("/readyz").json()["workers"]["failed"] >= 1
    finally:
        worker.stop()
    client.post(f"/v1/jobs/{job['id']}/cancel")


def test_after_sigkill_a_job_is_redelivered_and_completes_once_and_a_poison_job_fails(
    stack: ServiceStack,
    tenant: Tenant,
    receiver: WebhookReceiver,
    carphone_distorted: Path,
    astronaut_png: Path,
    tmp_path: Path,
) -> None:
    """Two workers are killed mid-job (SIGKILL to the whole worker, no cleanup), with an idle worker
    waiting on each queue. Their leases run out and the sweep sends the jobs again at once: the
    redelivery takes about ``lease_ttl_s`` + one sweep, not the broker's visibility timeout.

    ``crash``: the replacement worker finishes the job (second attempt): one output, one
    ``completed`` webhook. ``poison``: its workers allow one delivery only, so the second attempt
    ends the job as ``failed`` with ``worker_lost`` instead of killing another worker.
    """
    name, client = tenant
    settings = stack.settings
    inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"])
    runs = tmp_path / "crash-runs"  # the double appends "start" and "done" per run of the crash job
    limits = {"crash": 3, "poison": 1}
    first = {
        engine: stack.start_restore_worker(f"{engine}-a", engine=engine, max_deliveries=limit)
        for engine, limit in limits.items()
    }
    jobs = {
        # the first run lasts until it is killed (however slow the machine); the redelivery is short
        "crash": submit(
            client,
            carphone_distorted,
            astronaut_png,
            engine="crash",
            webhook=inbox.url,
            webhook_events_filter=["start", "completed"],
            prompt=f"double:steps=20,step_s=0.15,first_run={tmp_path / 'crash-first-run'},runs={runs}",
        ),
        "poison": submit(
            client,
            carphone_distorted,
            astronaut_png,
            engine="poison",
            prompt=f"double:steps=20,step_s=0.15,first_run={tmp_path / 'poison-first-run'}",
        ),
    }
    for engine in first:
        stack.wait_job(client, jobs[engine]["id"], {"processing"})
    second = [
        stack.start_restore_worker(f"{engine}-b", engine=engine, max_deliveries=limit)
        for engine, limit in limits.items()
    ]
    try:
        for engine in limits:
            stack.wait_worker(f"{engine}-b", WorkerState.READY)
        for worker in first.values():
            worker.signal_group(signal.SIGKILL)  # the whole worker: parent and pool process
        killed = time.monotonic()
        for worker in first.values():
            worker.popen.wait(timeout=5)
        job_id = jobs["crash"]["id"]
        while client.get(f"/v1/jobs/{job_id}").json()["attempts"] < 2:
            assert time.monotonic() < killed + 120, client.get(f"/v1/jobs/{job_id}").json()  # never redelivered
            time.sleep(0.05)
        redelivery_s = time.monotonic() - killed
        print(
            f"\nredelivery after SIGKILL: {redelivery_s:.2f} s (lease_ttl_s={settings.lease_ttl_s}, "
            f"sweep_interval_s={settings.sweep_interval_s}, visibility_timeout_s={settings.visibility_timeout_s})"
        )
        # The sweep sent it again when the lease ran out (it logs that), not the broker's visibility
        # timeout: a broker redelivery would have renewed the lease, and the sweep would stay silent.
        service = next(child for child in stack.stack.children if child.name == "service")
        assert f"job {job_id} lost its worker; sending it again" in Path(service.log_path).read_text()
        done = stack.wait_job(client, job_id, {"succeeded", "failed"}, timeout_s=20)
        poisoned = stack.wait_job(client, jobs["poison"]["id"], {"succeeded", "failed"}, timeout_s=20)
        assert done["status"] == "succeeded" and done["attempts"] == 2
        outputs = stack.objects(f"outputs/{name}/{job_id}/")
        assert outputs == [f"outputs/{name}/{job_id}/report.json", f"outputs/{name}/{job_id}/restored.mp4"]
        etags = {key: stack.s3.head_object(Bucket=stack.bucket, Key=key)["ETag"] for key in outputs}
        received = inbox.wait_for(lambda items: any(r.webhook_id.endswith("_completed") for r in items))
        # The killed worker never acknowledged the job's first message: once its visibility timeout
        # passes, the broker hands it to the replacement worker, which must not run the job again.
        replacement = Path(second[0].log_path)
        wait_until(
            lambda: f"job {job_id}: not run (terminal)" in replacement.read_text(),
            timeout_s=settings.visibility_timeout_s * 6,
            what="the broker's redelivery of the first message",
        )
    finally:
        for worker in second:
            worker.stop()
    assert runs.read_text() == "start\nstart\ndone\n"  # the killed run and the one that finished: no third
    again = client.get(f"/v1/jobs/{job_id}").json()
    assert (again["status"], again["attempts"]) == ("succeeded", 2)
    assert {key: stack.s3.head_object(Bucket=stack.bucket, Key=key)["ETag"] for key in outputs} == etags
    assert Counter(events(inbox.snapshot())) == {"start": 1, "completed": 1}
    assert all(r.verified for r in received)
    assert stack.objects(f"outputs/{name}/{jobs['poison']['id']}/") == []
    assert poisoned["status"] == "failed" and poisoned["error"]["code"] == "worker_lost"
