"""The store and storage side of fault handling, on the real Redis and weed S3 (no worker processes).

Leases taken back after Redis was unreachable, rescue of lost runs, hand-back on shutdown, the
hard-time-limit transition, webhook state on the job, the retry policies, and the cleaner of
uploads a failed run left behind. The process-level fault tests are in the other
``test_faults_*`` files and in test_job_lifecycle.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from ipfvr.devstack import S3Server
from jobs.broker import create_celery
from jobs.ids import new_job_id
from jobs.model import JobInputs, Status, WebhookEvent
from jobs.options import JobOptions
from jobs.settings import Settings
from jobs.storage import StorageUnavailable, output_key, report_key
from jobs.store.jobs import JobStore, NewJob
from jobs.store.results import Beat
from jobs.store.workers import WorkerRegistry
from jobs.webhooks.outbox import Outbox
from jobs.webhooks.policy import RetryPolicy
from worker.context import WorkerContext
from worker.retry import Backoff, retry
from worker.upload_journal import LeftoverCleaner, UploadJournal

ALL = frozenset(WebhookEvent)


@pytest.fixture()
def store(redis_url: str, redis_prefix: Callable[[], str]) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url, decode_responses=True), redis_prefix())


def create(store: JobStore, *, webhook: bool = False) -> str:
    now, job_id = time.time(), new_job_id()
    store.create(
        NewJob(
            id=job_id,
            tenant="acme",
            engine="baseline",
            options=JobOptions(),
            inputs=JobInputs(video=f"inputs/acme/{job_id}/video", references=[]),
            webhook_url="http://127.0.0.1:9/hook" if webhook else None,
            webhook_events=ALL if webhook else frozenset(),
            created_at=now,
            expires_at=now + 60,
        ),
        idempotency_key=None,
        idempotency_ttl_s=60,
        max_queued=100,
    )
    return job_id


def claim(store: JobStore, job_id: str, owner: str, *, lease_s: float = 5.0, max_deliveries: int = 3) -> str:
    return store.claim(
        job_id, owner=owner, lease_ttl_s=lease_s, max_deliveries=max_deliveries, run_deadline=time.time() + 60
    ).outcome


# ---------------------------------------------------------------------------------------------- leases
def test_a_lease_that_ran_out_unrenewed_is_taken_back_by_its_holder_only(store: JobStore) -> None:
    """Redis down longer than the lease: the holder takes it back, unless another run claimed the job."""
    job = create(store)
    assert claim(store, job, "node@h:1:a", lease_s=0.1) == "claimed"
    time.sleep(0.15)  # the lease ran out: no heartbeat reached Redis
    assert store.heartbeat(job, owner="node@h:1:a", lease_ttl_s=5) is Beat.RUNNING
    assert store.redis.get(store.keys.lease(job)) == "node@h:1:a"
    assert store.heartbeat(job, owner="node@h:9:z", lease_ttl_s=5) is Beat.LOST  # a stranger gets nothing

    other = create(store)
    claim(store, other, "node@h:1:a", lease_s=0.1)
    time.sleep(0.15)
    assert claim(store, other, "node@h:2:b") == "claimed"  # the redelivery won the race
    assert store.heartbeat(other, owner="node@h:1:a", lease_ttl_s=5) is Beat.LOST
    assert store.complete(other, owner="node@h:1:a", status=Status.SUCCEEDED).outcome == "lost"


def test_a_lost_run_is_rescued_once_and_the_next_claim_clears_the_mark(store: JobStore) -> None:
    job = create(store)
    claim(store, job, "a", lease_s=0.1)
    assert store.rescue(job, redelivery_grace_s=30) is None  # its lease is alive
    time.sleep(0.15)
    assert store.rescue(job, redelivery_grace_s=30) == "baseline"
    assert store.rescue(job, redelivery_grace_s=30) is None  # one message is on its way already
    assert store.active("baseline") == [job]
    assert claim(store, job, "b") == "claimed"
    assert store.get(job).deliveries == 2
    assert not store.redis.hexists(store.keys.job(job), "rescued_at")


def test_a_rescued_job_nobody_claims_fails_as_worker_lost_after_the_grace(store: JobStore) -> None:
    job = create(store)
    claim(store, job, "a", lease_s=0.05)
    time.sleep(0.1)
    now = time.time()
    assert store.rescue(job, redelivery_grace_s=2, now=now) == "baseline"
    assert store.due("run", now=now + 1) == [] and store.due("run", now=now + 2.5) == [job]
    assert store.run_deadline(job, redelivery_grace_s=2, time_limit_s=60, now=now + 2.5).outcome == "lost"
    assert store.get(job).error.code == "worker_lost"


def test_a_handed_back_run_does_not_count_towards_the_redelivery_cap(store: JobStore) -> None:
    job = create(store)
    assert claim(store, job, "a", max_deliveries=1) == "claimed"
    assert store.release(job, owner="someone-else", redelivery_grace_s=30) is None
    assert store.release(job, owner="a", redelivery_grace_s=30) == "baseline"
    assert store.rescue(job, redelivery_grace_s=30) is None  # handed back: its message is on its way
    assert store.heartbeat(job, owner="a", lease_ttl_s=5) is Beat.LOST  # the old run cannot take it back
    assert claim(store, job, "b", max_deliveries=1) == "claimed"  # not poisoned
    assert store.get(job).deliveries == 2


def test_heartbeat_asks_for_the_job_back_once_the_node_drain_time_passed(store: JobStore) -> None:
    job = create(store)
    claim(store, job, "node@h:1:a")
    now = time.time()
    workers = WorkerRegistry(store.redis, store.keys.prefix)
    workers.mark_draining("node@h", hand_back_at=now + 5, ttl_s=60)
    assert store.heartbeat(job, owner="node@h:1:a", lease_ttl_s=5, node="node@h", now=now) is Beat.RUNNING
    assert store.heartbeat(job, owner="node@h:1:a", lease_ttl_s=5, node="node@h", now=now + 6) is Beat.HAND_BACK
    assert store.heartbeat(job, owner="node@h:1:a", lease_ttl_s=5, node="other@h", now=now + 6) is Beat.RUNNING
    workers.clear_draining("node@h")  # a worker restarted under the same name keeps its jobs
    assert store.heartbeat(job, owner="node@h:1:a", lease_ttl_s=5, node="node@h", now=now + 6) is Beat.RUNNING


def test_the_hard_time_limit_fails_only_a_run_of_the_reporting_node(store: JobStore) -> None:
    job = create(store, webhook=True)
    claim(store, job, "timeout@h:77:abc")
    assert store.fail_time_limit(job, node="timeout@h2", time_limit_s=6).outcome == "skipped"
    done = store.fail_time_limit(job, node="timeout@h", time_limit_s=6)
    assert done.outcome == "done" and done.delivery == f"msg_{job[4:]}_completed"
    record = store.get(job)
    assert record.status is Status.FAILED and record.error.code == "time_limit_exceeded"
    assert store.fail_time_limit(job, node="timeout@h", time_limit_s=6).outcome == "skipped"


# ---------------------------------------------------------------------------------------------- webhooks
def test_webhook_attempts_are_recorded_on_the_job(store: JobStore) -> None:
    outbox = Outbox(store.redis, store.keys.prefix)
    job = create(store, webhook=True)
    claim(store, job, "a")
    delivery = store.complete(job, owner="a", status=Status.SUCCEEDED).delivery
    assert delivery is not None
    now = time.time()
    assert outbox.claim(delivery, in_flight_s=30, now=now) is not None
    outbox.record(delivery, "retry", detail="HTTP 500", next_attempt_at=now + 5, now=now)
    state = store.get(job).webhook
    assert (state.event, state.state, state.attempts, state.last_error) == ("completed", "retrying", 1, "HTTP 500")
    assert state.next_attempt_at == pytest.approx(now + 5)
    assert outbox.claim(delivery, in_flight_s=30, now=now + 6) is not None
    outbox.record(delivery, "delivered", detail="204", now=now + 6)
    state = store.get(job).webhook
    assert (state.state, state.attempts, state.last_error, state.next_attempt_at) == ("delivered", 2, "HTTP 500", None)


def test_webhook_retries_stop_at_the_attempt_cap_or_the_horizon() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=10, max_s=1000, horizon_s=100)
    assert policy.next_attempt(attempts=1, best_effort=False, permanent=False, now=1000, recorded_at=1000) == 1010
    assert policy.next_attempt(attempts=3, best_effort=False, permanent=False, now=1060, recorded_at=1000) == 1100
    assert policy.next_attempt(attempts=3, best_effort=False, permanent=False, now=1070, recorded_at=1000) is None
    assert policy.next_attempt(attempts=10, best_effort=False, permanent=False, now=1000, recorded_at=1000) is None


def test_backoff_doubles_and_gives_up_at_the_horizon() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    def failing() -> None:
        raise StorageUnavailable("down")

    with pytest.raises(StorageUnavailable):
        retry(
            failing,
            backoff=Backoff(base_s=1, max_s=4, horizon_s=12),
            retry_on=(StorageUnavailable,),
            what="test",
            sleep=sleep,
            clock=lambda: clock[0],
        )
    assert slept == [1, 2, 4, 4]  # a fifth delay (4 s) would start the next attempt past 12 s
    calls = iter([StorageUnavailable("down"), None])

    def flaky() -> str:
        if (error := next(calls)) is not None:
            raise error
        return "stored"

    assert (
        retry(flaky, backoff=Backoff(base_s=0.001, max_s=1, horizon_s=1), retry_on=(StorageUnavailable,), what="test")
        == "stored"
    )


# ---------------------------------------------------------------------------------------------- leftovers
def test_the_cleaner_aborts_abandoned_uploads_and_deletes_partial_results_of_failed_jobs(
    s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str]
) -> None:
    prefix = redis_prefix()
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=prefix.replace("ipfvrtest-", "ipfvr-c-"),
    )
    ctx = WorkerContext.build(settings, create_celery(settings))
    ctx.storage.ensure_bucket()
    failed, succeeded = create(ctx.store), create(ctx.store)
    for job, status in ((failed, Status.FAILED), (succeeded, Status.SUCCEEDED)):
        claim(ctx.store, job, "a")
        ctx.storage.put_bytes(report_key("acme", job), b"{}", "application/json")
        ctx.store.complete(job, owner="a", status=status)
    upload_id = ctx.storage.client.create_multipart_upload(Bucket=ctx.storage.bucket, Key=output_key("acme", failed))[
        "UploadId"
    ]
    journal = UploadJournal(ctx.leftovers, failed, stale_after_s=60)
    journal.begun(output_key("acme", failed), upload_id)
    cleaner = LeftoverCleaner(ctx.leftovers, ctx.store, ctx.storage)
    assert cleaner.run(now=time.time(), retry_in_s=60) == 0  # a live upload is left alone until it is stale
    journal.abandoned(output_key("acme", failed), upload_id)
    journal.discard([report_key("acme", failed)])
    UploadJournal(ctx.leftovers, succeeded, stale_after_s=60).discard([report_key("acme", succeeded)])
    assert cleaner.run(now=time.time(), retry_in_s=60) == 3
    uploads = ctx.storage.client.list_multipart_uploads(Bucket=ctx.storage.bucket, Prefix="outputs/")
    assert uploads.get("Uploads", []) == []
    listed = ctx.storage.client.list_objects_v2(Bucket=ctx.storage.bucket, Prefix="outputs/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [report_key("acme", succeeded)]
    assert ctx.leftovers.due(now=float("inf")) == []


# ---------------------------------------------------------------------------------------------- refused finish
def test_a_refused_finish_deletes_outputs_only_when_no_other_run_can_own_them(
    s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str]
) -> None:
    """A run that lost its lease uploaded to the job's deterministic keys, then its finish was refused.

    While the redelivered run is still going, the objects may be that run's fresh output: keep them.
    Once the job has ended without success (canceled here), nothing can own them: delete them.
    """
    from worker.runner import JobRunner, Outcome

    prefix = redis_prefix()
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=prefix.replace("ipfvrtest-", "ipfvr-r-"),
    )
    ctx = WorkerContext.build(settings, create_celery(settings))
    ctx.storage.ensure_bucket()
    runner = JobRunner(ctx, restorer=None, worker_id="node@h:1")  # type: ignore[arg-type]  # _finish only

    def objects() -> list[str]:
        listed = ctx.storage.client.list_objects_v2(Bucket=ctx.storage.bucket, Prefix="outputs/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    job = create(ctx.store)
    claim(ctx.store, job, "old-run", lease_s=0.1)
    time.sleep(0.15)
    assert claim(ctx.store, job, "new-run") == "claimed"  # the redelivery holds the job now
    keys = sorted([output_key("acme", job), report_key("acme", job)])
    for key in keys:  # the new run's upload has landed; it has not completed yet
        ctx.storage.put_bytes(key, b"new", "application/octet-stream")
    record = ctx.store.get(job)
    assert record is not None
    runner._finish(record, "old-run", Outcome(Status.SUCCEEDED))
    assert objects() == keys, "the live run's output must survive the old run's refused finish"

    assert ctx.store.complete(job, owner="new-run", status=Status.CANCELED).outcome == "done"  # canceled mid-run
    runner._finish(record, "old-run", Outcome(Status.SUCCEEDED))
    assert objects() == [], "a canceled job keeps no output"
