"""The Redis job store on the real Redis: atomic transitions, idempotency, leases, races, pagination."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ipfvr.devstack import free_port
from ipfvr_core.progress import ProgressEvent
from jobs.errors import Conflict, Gone, IdempotencyKeyReused, InvalidRequest, NotFound, TooManyJobs, Unavailable
from jobs.ids import new_job_id
from jobs.model import ErrorInfo, JobInputs, Status, WebhookEvent
from jobs.options import JobOptions
from jobs.store.jobs import JobStore, NewJob
from jobs.store.uploads import Uploads
from jobs.tenants.accounts import Tenants
from jobs.webhooks.outbox import Outbox

ALL = frozenset(WebhookEvent)


@pytest.fixture()
def store(redis_url: str, redis_prefix: Callable[[], str]) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url, decode_responses=True), redis_prefix())


def new_job(tenant: str = "acme", *, webhook: bool = True, engine: str = "baseline", ttl: float = 60) -> NewJob:
    now = time.time()
    job_id = new_job_id()
    return NewJob(
        id=job_id,
        tenant=tenant,
        engine=engine,
        options=JobOptions(faces="target"),
        inputs=JobInputs(video=f"inputs/{tenant}/{job_id}/video", references=[f"inputs/{tenant}/{job_id}/reference-0"]),
        webhook_url="http://127.0.0.1:9/hook" if webhook else None,
        webhook_events=ALL if webhook else frozenset(),
        created_at=now,
        expires_at=now + ttl,
    )


def create(store: JobStore, job: NewJob, key: str | None = None, max_queued: int = 100) -> str:
    return store.create(job, idempotency_key=key, idempotency_ttl_s=60, max_queued=max_queued).job_id


def claim(store: JobStore, job_id: str, owner: str, max_deliveries: int = 3, lease: float = 5.0):  # noqa: ANN201
    return store.claim(
        job_id, owner=owner, lease_ttl_s=lease, max_deliveries=max_deliveries, run_deadline=time.time() + 60
    )


def test_create_read_and_queue_positions(store: JobStore) -> None:
    ids = [create(store, new_job()) for _ in range(3)]
    other_engine = create(store, new_job(engine="ipfvr"))
    records = [store.get_for("acme", i) for i in ids]
    assert [r.status for r in records] == [Status.QUEUED] * 3
    assert [store.queue_position(r) for r in records] == [0, 1, 2]
    assert store.queue_position(store.get_for("acme", other_engine)) == 0
    assert claim(store, ids[0], "w1").outcome == "claimed"
    assert store.queue_position(store.get_for("acme", ids[1])) == 0
    assert store.queue_position(store.get_for("acme", ids[0])) is None
    assert store.queue_depth("baseline") == (2, 1)


def test_idempotency_key_returns_the_first_job_per_tenant(store: JobStore) -> None:
    first = store.create(new_job(), idempotency_key="k-1", idempotency_ttl_s=60, max_queued=10)
    again = store.create(new_job(), idempotency_key="k-1", idempotency_ttl_s=60, max_queued=10)
    elsewhere = store.create(new_job("globex"), idempotency_key="k-1", idempotency_ttl_s=60, max_queued=10)
    assert first.created and not again.created and again.job_id == first.job_id
    assert elsewhere.created and elsewhere.job_id != first.job_id
    assert store.find_idempotent("acme", "k-1") == first.job_id
    assert len(store.list("acme", status=None, cursor=None, limit=10).items) == 1


def test_reused_idempotency_key_with_another_request_is_refused(store: JobStore) -> None:
    first = store.create(new_job(), idempotency_key="k-2", idempotency_ttl_s=60, max_queued=10, fingerprint="f1")
    again = store.create(new_job(), idempotency_key="k-2", idempotency_ttl_s=60, max_queued=10, fingerprint="f1")
    assert first.created and again.job_id == first.job_id and not again.created
    with pytest.raises(IdempotencyKeyReused, match=first.job_id) as refused:
        store.create(new_job(), idempotency_key="k-2", idempotency_ttl_s=60, max_queued=10, fingerprint="f2")
    assert refused.value.code == "idempotency_key_reused" and refused.value.field == "idempotency-key"
    assert store.find_idempotent("acme", "k-2", "f1") == first.job_id
    assert store.find_idempotent("acme", "k-2") == first.job_id  # no fingerprint: no comparison
    with pytest.raises(IdempotencyKeyReused):
        store.find_idempotent("acme", "k-2", "f2")
    assert len(store.list("acme", status=None, cursor=None, limit=10).items) == 1


def test_queued_limit_per_tenant(store: JobStore) -> None:
    create(store, new_job(), max_queued=2)
    started = create(store, new_job(), max_queued=2)
    with pytest.raises(TooManyJobs):
        create(store, new_job(), max_queued=2)
    create(store, new_job("globex"), max_queued=2)
    assert (store.queued_count("acme"), store.queued_count("globex"), store.queued_count("initech")) == (2, 1, 0)
    claim(store, started, "w1")
    assert store.queued_count("acme") == 1  # a started job no longer counts


def test_tenant_isolation_and_unknown_ids(store: JobStore) -> None:
    job_id = create(store, new_job())
    with pytest.raises(NotFound):
        store.get_for("globex", job_id)
    with pytest.raises(NotFound):
        store.cancel("globex", job_id, cancel_grace_s=1)
    with pytest.raises(NotFound):
        store.get_for("acme", "job_nope")
    with pytest.raises(NotFound):
        store.get_for("acme", new_job_id())


def test_cursor_pagination_and_status_filter(store: JobStore) -> None:
    ids = [create(store, new_job()) for _ in range(7)]
    store.cancel("acme", ids[2], cancel_grace_s=1)
    seen, cursor = [], None
    while True:
        page = store.list("acme", status=None, cursor=cursor, limit=3)
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))  # newest first, each exactly once
    canceled = store.list("acme", status=Status.CANCELED, cursor=None, limit=10)
    assert [r.id for r in canceled.items] == [ids[2]] and canceled.next_cursor is None
    assert len(store.list("acme", status=Status.QUEUED, cursor=None, limit=10).items) == 6
    with pytest.raises(InvalidRequest):
        store.list("acme", status=None, cursor="bm90LWFuLWlk", limit=3)


def test_claim_progress_complete_and_webhook_outbox(store: JobStore) -> None:
    outbox = Outbox(store.redis, store.keys.prefix)
    job_id = create(store, new_job())
    first = claim(store, job_id, "w1:a")
    assert first.outcome == "claimed" and first.attempt == 1 and first.delivery is not None
    assert store.get(job_id).status is Status.STARTING
    ack = store.report_progress(
        job_id, owner="w1:a", progress=ProgressEvent("restore", 1, 4, 0.25), webhook_interval_s=0
    )
    assert not ack.lost and not ack.cancel_requested and ack.delivery is not None
    throttled = store.report_progress(
        job_id, owner="w1:a", progress=ProgressEvent("restore", 2, 4, 0.5), webhook_interval_s=3600
    )
    assert throttled.delivery is None
    record = store.get(job_id)
    assert record.status is Status.PROCESSING and record.progress == ProgressEvent("restore", 2, 4, 0.5)
    assert store.report_progress(
        job_id, owner="intruder", progress=ProgressEvent("x", 0, 1, 0), webhook_interval_s=0
    ).lost
    done = store.complete(
        job_id, owner="w1:a", status=Status.SUCCEEDED, output_key="o", report_key="r", report={"ok": True}
    )
    assert done.outcome == "done" and done.delivery == f"msg_{job_id[4:]}_completed"
    final = store.get(job_id)
    assert final.status is Status.SUCCEEDED and final.report == {"ok": True} and final.output_key == "o"
    assert store.complete(job_id, owner="w1:a", status=Status.FAILED).outcome == "already"
    due = set(outbox.due())
    assert {first.delivery, ack.delivery, done.delivery} <= due
    assert store.queue_depth("baseline") == (0, 0)


def test_a_live_lease_blocks_a_second_worker_and_an_expired_one_does_not(store: JobStore) -> None:
    job_id = create(store, new_job())
    assert claim(store, job_id, "w1:a", lease=0.3).outcome == "claimed"
    held = claim(store, job_id, "w2:b")
    assert held.outcome == "leased" and 0 < held.lease_remaining_s <= 0.3
    time.sleep(0.35)  # w1 died: its lease runs out
    again = claim(store, job_id, "w2:b")
    assert again.outcome == "claimed" and again.attempt == 2 and again.delivery is None  # no second start event
    assert store.complete(job_id, owner="w1:a", status=Status.SUCCEEDED).outcome == "lost"
    assert store.complete(job_id, owner="w2:b", status=Status.SUCCEEDED).outcome == "done"


def test_redeliveries_are_capped(store: JobStore) -> None:
    job_id = create(store, new_job())
    for attempt in range(2):
        assert claim(store, job_id, f"w{attempt}", max_deliveries=2, lease=0.05).outcome == "claimed"
        time.sleep(0.06)
    poisoned = claim(store, job_id, "w9", max_deliveries=2)
    assert poisoned.outcome == "poisoned" and poisoned.delivery is not None
    record = store.get(job_id)
    assert record.status is Status.FAILED and record.error.code == "worker_lost"
    assert claim(store, job_id, "w10").outcome == "terminal"


def test_cancel_queued_running_and_terminal(store: JobStore) -> None:
    queued = create(store, new_job())
    t = store.cancel("acme", queued, cancel_grace_s=5)
    assert t.outcome == "canceled" and t.delivery is not None
    assert store.get(queued).status is Status.CANCELED and store.get(queued).error is None
    assert store.cancel("acme", queued, cancel_grace_s=5).outcome == "terminal"
    running = create(store, new_job())
    claim(store, running, "w1")
    assert store.cancel("acme", running, cancel_grace_s=5).outcome == "requested"
    assert store.heartbeat(running, owner="w1", lease_ttl_s=5) == 1
    assert store.get(running).cancel_requested and store.get(running).status is Status.STARTING
    assert store.due("cancel", now=time.time() + 6) == [running]
    assert store.complete(running, owner="w1", status=Status.CANCELED).outcome == "done"
    assert store.due("cancel", now=time.time() + 6) == []


@pytest.mark.parametrize("finish_first", [True, False])
def test_cancel_racing_a_finish_loses_nothing(store: JobStore, finish_first: bool) -> None:
    job_id = create(store, new_job())
    claim(store, job_id, "w1")
    if finish_first:
        assert store.complete(job_id, owner="w1", status=Status.SUCCEEDED, output_key="o").outcome == "done"
        assert store.cancel("acme", job_id, cancel_grace_s=5).outcome == "terminal"
        expected = Status.SUCCEEDED
    else:
        assert store.cancel("acme", job_id, cancel_grace_s=5).outcome == "requested"
        assert store.complete(job_id, owner="w1", status=Status.CANCELED).outcome == "done"
        expected = Status.CANCELED
    record = store.get(job_id)
    assert record.status is expected
    completed = store.redis.hget(store.keys.counter("jobs_completed"), f"status={expected.value}")
    assert completed == "1"


def test_concurrent_cancels_and_finishes_yield_one_terminal_transition(store: JobStore) -> None:
    ids = [create(store, new_job()) for _ in range(20)]
    for i in ids:
        claim(store, i, f"w-{i}")
    results: dict[str, list[str]] = {i: [] for i in ids}
    barrier = threading.Barrier(2)

    def finisher() -> None:
        barrier.wait()
        for i in ids:
            results[i].append(store.complete(i, owner=f"w-{i}", status=Status.SUCCEEDED).outcome)

    def forcer() -> None:
        barrier.wait()
        for i in reversed(ids):
            results[i].append(store.force(i, expected="running", status=Status.CANCELED, error=None).outcome)

    threads = [threading.Thread(target=finisher), threading.Thread(target=forcer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in ids:
        assert sorted(results[i]) in (["already", "done"], ["done", "skipped"], ["done", "lost"]), results[i]
        record = store.get(i)
        assert record.status in (Status.SUCCEEDED, Status.CANCELED)
        completed = store.redis.hget(store.keys.delivery(f"msg_{i[4:]}_completed"), "state")
        assert completed == "pending"  # exactly one completed delivery per job
    counters = store.redis.hgetall(store.keys.counter("jobs_completed"))
    assert sum(int(v) for v in counters.values()) == len(ids)


def test_expiry_in_the_queue(store: JobStore) -> None:
    job_id = create(store, new_job(ttl=0.01))
    time.sleep(0.02)
    expired = claim(store, job_id, "w1")
    assert expired.outcome == "expired"
    assert store.get(job_id).error.code == "queue_ttl_exceeded"
    late = create(store, new_job(ttl=0.01))
    assert store.due("queue", now=time.time() + 1) == [late]
    forced = store.force(late, expected="queued", status=Status.EXPIRED, error=ErrorInfo("queue_ttl_exceeded", "late"))
    assert forced.outcome == "done" and store.get(late).status is Status.EXPIRED


def test_tombstones(store: JobStore) -> None:
    job_id = create(store, new_job(), key="idem-7")
    with pytest.raises(Conflict):
        store.tombstone("acme", job_id, ttl_s=60)
    store.cancel("acme", job_id, cancel_grace_s=1)
    store.tombstone("acme", job_id, ttl_s=60)
    with pytest.raises(Gone):
        store.get_for("acme", job_id)
    with pytest.raises(Gone):
        store.tombstone("acme", job_id, ttl_s=60)
    assert store.list("acme", status=None, cursor=None, limit=10).items == []
    assert store.find_idempotent("acme", "idem-7") is None
    assert 0 < store.redis.ttl(store.keys.job(job_id)) <= 60
    assert claim(store, job_id, "w1").outcome == "missing"


def test_presigned_uploads_are_used_once_by_their_tenant(store: JobStore) -> None:
    uploads = Uploads(store.redis, store.keys.prefix)
    uploads.register("acme", "upl_a")
    uploads.register("acme", "upl_b")
    with pytest.raises(Conflict):
        store.create(new_job("globex"), idempotency_key=None, idempotency_ttl_s=60, max_queued=10, upload_ids=["upl_a"])
    store.create(new_job(), idempotency_key=None, idempotency_ttl_s=60, max_queued=10, upload_ids=["upl_a", "upl_b"])
    with pytest.raises(Conflict):
        store.create(new_job(), idempotency_key=None, idempotency_ttl_s=60, max_queued=10, upload_ids=["upl_a"])


def test_api_keys_are_stored_hashed(redis_url: str, redis_prefix: Callable[[], str]) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = redis_prefix()
    tenants = Tenants(client, prefix, b"k" * 32)
    key = tenants.create_key("acme")
    assert tenants.authenticate(key) == "acme"
    assert tenants.authenticate(key + "x") is None and tenants.authenticate("nope") is None
    # every name and decoded value under the prefix (DUMP output is compressed: a key could hide in it)
    stored: list[str] = []
    for name in client.scan_iter(match=f"{prefix}*"):
        kind = client.type(name)
        stored.append(name)
        if kind == "string":
            stored.append(client.get(name) or "")
        elif kind == "hash":
            stored += [item for pair in client.hgetall(name).items() for item in pair]
        elif kind == "set":
            stored += list(client.smembers(name))
        elif kind == "zset":
            stored += client.zrange(name, 0, -1)
        else:
            raise AssertionError(f"{name} is a {kind}; read its values here too")
    assert len(stored) > 2 and all(key not in text for text in stored)
    assert Tenants(client, prefix, b"other-secret" * 3).authenticate(key) is None
    before = tenants.webhook_secrets("acme")
    after = tenants.rotate_webhook_secret("acme", grace_s=60)
    assert after.current != before.current and after.previous == before.current
    assert after.current.startswith("whsec_")
    with pytest.raises(InvalidRequest):
        tenants.create_key("Not A Tenant!")


def test_run_deadline_fails_a_live_overrun_and_waits_for_a_dead_workers_redelivery(store: JobStore) -> None:
    overrun = create(store, new_job())
    claim(store, overrun, "w1", lease=30)
    t = store.run_deadline(overrun, redelivery_grace_s=10, time_limit_s=5)
    assert t.outcome == "timed_out" and store.get(overrun).error.code == "time_limit_exceeded"

    orphan = create(store, new_job())
    claim(store, orphan, "w1", lease=0.05)
    time.sleep(0.06)  # the worker died: no lease
    now = time.time()
    assert store.run_deadline(orphan, redelivery_grace_s=10, time_limit_s=5, now=now).outcome == "waiting"
    assert store.due("run", now=now + 9) == [] and store.due("run", now=now + 11) == [orphan]
    assert claim(store, orphan, "w2", lease=30).outcome == "claimed"  # the redelivery arrived: new deadline
    assert store.get(orphan).status is Status.STARTING

    never = create(store, new_job())
    claim(store, never, "w1", lease=0.05)
    time.sleep(0.06)
    store.run_deadline(never, redelivery_grace_s=0, time_limit_s=5)
    lost = store.run_deadline(never, redelivery_grace_s=0, time_limit_s=5)
    assert lost.outcome == "lost" and store.get(never).error.code == "worker_lost"
    assert store.run_deadline(never, redelivery_grace_s=0, time_limit_s=5).outcome == "skipped"


def test_one_holder_of_a_lock_at_a_time_and_a_late_holder_leaves_the_next_ones(store: JobStore) -> None:
    with store.exclusive("sweep", ttl_s=5) as held:
        assert held
        with store.exclusive("sweep", ttl_s=5) as second:
            assert not second
    with store.exclusive("sweep", ttl_s=5) as held:  # released on leaving the block
        assert held
    late = store.exclusive("slow", ttl_s=0.05)
    assert late.__enter__()
    time.sleep(0.1)  # the late holder's lock ran out ...
    with store.exclusive("slow", ttl_s=5) as taken:
        assert taken  # ... and another holder took it
        late.__exit__(None, None, None)  # the late holder finishes
        with store.exclusive("slow", ttl_s=5) as third:
            assert not third  # and left the new holder's lock alone


def test_readiness_check_names_redis_when_it_does_not_answer(store: JobStore) -> None:
    store.check()
    nowhere = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))  # refused at once, not retried
    unreachable = JobStore(nowhere, "ipfvr-nowhere")
    with pytest.raises(Unavailable) as refused:
        unreachable.check()
    assert refused.value.code == "redis_unavailable"
