"""Worker faults against real Celery workers: a poison job, time limits, and SIGTERM shutdown.

Each test starts its own restore worker(s) on an engine queue of its own, next to the session
stack (API, service worker with the sweep), with the copy double told by the job's prompt to
crash, overrun or take long. SIGKILL of a whole worker mid-job is in test_job_lifecycle.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from jobs.store.workers import WorkerInfo, WorkerRegistry, WorkerState
from tests.service.fault_tools import exit_within, wait_for
from tests.service.receiver import WebhookReceiver
from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]


def submit(client: httpx.Client, video: Path, reference: Path, **options: object) -> dict[str, Any]:
    files = [
        ("options", (None, json.dumps(options), "application/json")),
        ("video", ("clip.mp4", video.read_bytes())),
        ("reference", ("face.png", reference.read_bytes())),
    ]
    response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    return response.json()


def pool_process(stack: ServiceStack, name: str) -> WorkerInfo | None:
    """The ready pool process of worker ``name`` (its pid changes when the pool replaces it)."""
    ready = [
        w
        for w in WorkerRegistry(stack.redis, stack.settings.key_prefix).list()
        if w.hostname.startswith(f"{name}@") and w.state in (WorkerState.READY, WorkerState.BUSY)
    ]
    return max(ready, key=lambda w: w.started_at) if ready else None


def test_a_poison_job_fails_after_the_redelivery_cap_and_the_worker_keeps_serving(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    """The job kills its pool process every time (SIGKILL from inside). Celery requeues it at once
    (reject on worker lost); each run counts; the claim past ``max_deliveries`` fails it."""
    _, client = tenant
    worker = stack.start_restore_worker("selfkill", engine="selfkill", max_deliveries=2)
    try:
        stack.wait_worker("selfkill", WorkerState.READY)
        poison = submit(client, carphone_distorted, astronaut_png, engine="selfkill", prompt="double:crash=1")
        failed = stack.wait_job(client, poison["id"], {"succeeded", "failed"}, timeout_s=40)
        assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost", failed
        assert failed["attempts"] == 3  # two runs started and died; the third claim ended it
        healthy = submit(client, carphone_distorted, astronaut_png, engine="selfkill")
        done = stack.wait_job(client, healthy["id"], {"succeeded", "failed"}, timeout_s=30)
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert worker.alive()  # the same worker (its pool replaced the killed processes)
    finally:
        worker.stop()


def test_a_job_past_its_time_limit_fails_and_the_next_job_runs(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    """Soft limit (2 s): the run is interrupted and fails ``time_limit_exceeded``; its memory is
    released in the same process. Hard limit (3 s), for a run that swallows the soft one: Celery kills
    the process, the worker's main process fails the job, and a fresh process (and model) takes over."""
    _, client = tenant
    worker = stack.start_restore_worker("timeout", engine="timeout", job_time_limit_s=2, job_kill_grace_s=1)
    try:
        stack.wait_worker("timeout", WorkerState.READY)
        first = pool_process(stack, "timeout")
        assert first is not None
        soft = submit(client, carphone_distorted, astronaut_png, engine="timeout", prompt="double:steps=100,step_s=0.1")
        done = stack.wait_job(client, soft["id"], {"succeeded", "failed"}, timeout_s=20)
        assert done["status"] == "failed" and done["error"]["code"] == "time_limit_exceeded", done
        assert 1.5 <= done["metrics"]["predict_time"] < 10.0  # stopped at the limit, not run to its end
        same = pool_process(stack, "timeout")
        assert same is not None and same.pid == first.pid  # interrupted in place, not killed

        hard = submit(
            client,
            carphone_distorted,
            astronaut_png,
            engine="timeout",
            prompt="double:steps=100,step_s=0.1,ignore_soft_limit=1",
        )
        done = stack.wait_job(client, hard["id"], {"succeeded", "failed"}, timeout_s=20)
        assert done["status"] == "failed" and done["error"]["code"] == "time_limit_exceeded", done
        assert done["metrics"]["predict_time"] >= 2.5 and done["attempts"] == 1  # failed when killed, not redelivered
        wait_for(
            lambda: (p := pool_process(stack, "timeout")) is not None and p.pid != first.pid,
            timeout_s=15,
            what="a fresh pool process",
        )

        after = submit(client, carphone_distorted, astronaut_png, engine="timeout")
        done = stack.wait_job(client, after["id"], {"succeeded", "failed"}, timeout_s=20)
        assert done["status"] == "succeeded" and done["attempts"] == 1
    finally:
        worker.stop()


def test_sigterm_lets_a_job_finish_within_the_grace_period(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    # A grace period far longer than the job: a worker that waited it out would still be running at
    # exit_within's deadline, so the test needs no wall-clock bound of its own.
    worker = stack.start_restore_worker("shutdown-a", engine="shutdown", shutdown_grace_s=120)
    try:
        stack.wait_worker("shutdown-a", WorkerState.READY)
        job = submit(client, carphone_distorted, astronaut_png, engine="shutdown", prompt="double:steps=10,step_s=0.15")
        stack.wait_job(client, job["id"], {"processing"})
        os.kill(worker.popen.pid, signal.SIGTERM)  # what Kubernetes or Docker send: the main process only
        code = exit_within(worker, timeout_s=60)  # it left as soon as the job was done
        assert code == 0, worker.log_tail()
        done = client.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert "handed back for another worker" not in Path(worker.log_path).read_text()
    finally:
        worker.stop()


def test_sigterm_hands_a_long_job_to_another_worker_after_the_grace_period(
    stack: ServiceStack, tenant: Tenant, receiver: WebhookReceiver, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"])
    grace = 1.5
    leaving = stack.start_restore_worker("shutdown-b", engine="shutdown", shutdown_grace_s=grace)
    staying = None
    try:
        stack.wait_worker("shutdown-b", WorkerState.READY)
        job = submit(
            client,
            carphone_distorted,
            astronaut_png,
            engine="shutdown",
            prompt="double:steps=40,step_s=0.1",
            webhook=inbox.url,
            webhook_events_filter=["start", "completed"],
        )
        stack.wait_job(client, job["id"], {"processing"})
        staying = stack.start_restore_worker("shutdown-c", engine="shutdown")
        stack.wait_worker("shutdown-c", WorkerState.READY)
        os.kill(leaving.popen.pid, signal.SIGTERM)
        signalled = time.monotonic()
        code = exit_within(leaving, timeout_s=15)
        left_after = time.monotonic() - signalled
        assert code == 0, leaving.log_tail()
        assert grace <= left_after  # it kept working through the grace period ...
        done = stack.wait_job(client, job["id"], {"succeeded", "failed"}, timeout_s=30)
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert "handed back for another worker" in Path(leaving.log_path).read_text()  # ... then handed the job back
        completed = inbox.wait_for(lambda items: any(r.webhook_id.endswith("_completed") for r in items))
        time.sleep(0.5)
        assert sorted(r.webhook_id.rsplit("_", 1)[-1] for r in inbox.snapshot()) == ["completed", "start"]
        assert all(r.verified for r in completed)
    finally:
        leaving.stop()
        if staying is not None:
            staying.stop()
