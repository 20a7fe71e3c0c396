"""The maintenance sweep on the real Redis and S3: queue expiry, retention, stale uploads, its lock."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ipfvr.devstack import S3Server
from jobs.broker import create_celery
from jobs.ids import new_job_id
from jobs.model import JobInputs, Status, WebhookEvent
from jobs.options import JobOptions
from jobs.settings import Settings
from jobs.storage import input_key, output_key, report_key, upload_key
from jobs.store.jobs import NewJob
from worker.context import WorkerContext
from worker.sweeper import Sweeper


@pytest.fixture()
def ctx(s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str]) -> WorkerContext:
    prefix = redis_prefix()
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        broker_key_prefix=f"{prefix}:celery:",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=prefix.replace("ipfvrtest-", "ipfvr-s-"),
        retention_s=3600,
        upload_ttl_s=600,
    )
    context = WorkerContext.build(settings, create_celery(settings))
    context.storage.ensure_bucket()
    return context


def make_job(ctx: WorkerContext, *, queue_ttl_s: float = 60) -> str:
    job_id = new_job_id()
    inputs = JobInputs(video=input_key("acme", job_id, "video"), references=[input_key("acme", job_id, "reference-0")])
    for key in inputs.object_keys():
        ctx.storage.put_bytes(key, b"data", "application/octet-stream")
    now = time.time()
    ctx.store.create(
        NewJob(
            id=job_id,
            tenant="acme",
            engine="baseline",
            options=JobOptions(),
            inputs=inputs,
            webhook_url="http://127.0.0.1:9/",
            webhook_events=frozenset({WebhookEvent.COMPLETED}),
            created_at=now,
            expires_at=now + queue_ttl_s,
        ),
        idempotency_key=None,
        idempotency_ttl_s=60,
        max_queued=100,
    )
    return job_id


def objects(ctx: WorkerContext, prefix: str) -> list[str]:
    listed = ctx.storage.client.list_objects_v2(Bucket=ctx.storage.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_jobs_never_started_expire_with_a_webhook(ctx: WorkerContext) -> None:
    job_id = make_job(ctx, queue_ttl_s=1)
    fresh = make_job(ctx, queue_ttl_s=600)
    assert Sweeper(ctx).run(now=time.time() + 2)
    expired = ctx.store.get(job_id)
    assert expired.status is Status.EXPIRED and expired.error.code == "queue_ttl_exceeded"
    assert ctx.outbox.state(f"msg_{job_id[4:]}_completed")["state"] == "pending"
    assert ctx.store.get(fresh).status is Status.QUEUED


def test_retention_removes_inputs_and_outputs_and_marks_the_job(ctx: WorkerContext) -> None:
    job_id = make_job(ctx)
    ctx.store.claim(job_id, owner="w", lease_ttl_s=5, max_deliveries=3, run_deadline=time.time() + 60)
    for key in (output_key("acme", job_id), report_key("acme", job_id)):
        ctx.storage.put_bytes(key, b"result", "video/mp4")
    ctx.store.complete(
        job_id,
        owner="w",
        status=Status.SUCCEEDED,
        output_key=output_key("acme", job_id),
        report_key=report_key("acme", job_id),
        report={"frames_total": 1},
    )
    Sweeper(ctx).run(now=time.time() + 60)  # within retention: kept
    assert len(objects(ctx, f"inputs/acme/{job_id}/")) == 2 and not ctx.store.get(job_id).data_removed
    Sweeper(ctx).run(now=time.time() + 3600 + 60)
    record = ctx.store.get(job_id)
    assert record.data_removed and record.output_key is None and record.report == {"frames_total": 1}
    assert objects(ctx, f"inputs/acme/{job_id}/") == [] and objects(ctx, f"outputs/acme/{job_id}/") == []


def test_unused_presigned_uploads_are_removed(ctx: WorkerContext) -> None:
    ctx.uploads.register("acme", "upl_stale", now=time.time() - 700)
    ctx.uploads.register("acme", "upl_recent")
    for upload in ("upl_stale", "upl_recent"):
        ctx.storage.put_bytes(upload_key("acme", upload), b"x", "video/mp4")
    Sweeper(ctx).run(now=time.time())
    assert objects(ctx, "uploads/acme/") == [upload_key("acme", "upl_recent")]
    assert ctx.uploads.stale(older_than=time.time()) == [("acme", "upl_recent")]


def test_one_sweep_at_a_time(ctx: WorkerContext) -> None:
    with ctx.store.exclusive("sweep", ttl_s=5) as held:
        assert held
        assert not Sweeper(ctx).run(now=time.time())
    assert Sweeper(ctx).run(now=time.time())  # released: the next sweep runs
    assert Sweeper(ctx).run(now=time.time())
