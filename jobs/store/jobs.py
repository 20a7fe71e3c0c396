"""The job store: Redis is the system of record for jobs (not Celery's result backend).

Reads are plain hash and sorted-set reads. Every write that changes a job's status is one Lua
script from ``jobs/store/lua.py`` and returns what happened, including the id of any webhook delivery
it recorded, so the caller can dispatch it at once (the outbox keeps it if the caller dies first).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, cast

import redis
from redis.exceptions import RedisError

from ipfvr_core.progress import ProgressEvent
from jobs.errors import Conflict, Gone, IdempotencyKeyReused, NotFound, TooManyJobs, Unavailable
from jobs.ids import JOB_ID
from jobs.model import ErrorInfo, JobInputs, JobRecord, Status, WebhookEvent, encode_events
from jobs.options import JobOptions
from jobs.store import lua
from jobs.store.cursor import decode_cursor, encode_cursor
from jobs.store.keys import Keys
from jobs.store.replies import decoded as _decode
from jobs.store.replies import now_or as _now
from jobs.store.replies import optional_text, text_hash, texts
from jobs.store.results import Beat, Claim, Created, Page, ProgressAck, Transition
from jobs.store.sweeps import SweepQueries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewJob:
    """What the API knows when it creates a job."""

    id: str
    tenant: str
    engine: str
    options: JobOptions  # as the client chose them, with the engine resolved
    inputs: JobInputs
    webhook_url: str | None
    webhook_events: frozenset[WebhookEvent]
    created_at: float
    expires_at: float  # queue deadline


def _delivery(value: bytes | str) -> str | None:
    text = _decode(value)
    return text or None


def idempotency_digest(key: str) -> str:
    """Idempotency keys are stored hashed: they are client-chosen strings of any content."""
    return hashlib.sha256(key.encode()).hexdigest()


def _key_reused(job_id: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this Idempotency-Key created job {job_id} from a different request (options or files); "
        "send a new key for a new job",
        field="idempotency-key",
    )


class JobStore(SweepQueries):
    """Jobs, their indexes and their transitions in Redis (``decode_responses=True`` client)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._prefix = prefix
        self._create = client.register_script(lua.CREATE)
        self._claim = client.register_script(lua.CLAIM)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._progress = client.register_script(lua.PROGRESS)
        self._complete = client.register_script(lua.COMPLETE)
        self._cancel = client.register_script(lua.CANCEL)
        self._force = client.register_script(lua.FORCE)
        self._run_deadline = client.register_script(lua.RUN_DEADLINE)
        self._rescue = client.register_script(lua.RESCUE)
        self._release = client.register_script(lua.RELEASE)
        self._time_limit = client.register_script(lua.TIME_LIMIT)
        self._tombstone = client.register_script(lua.TOMBSTONE)

    def check(self) -> None:
        """Readiness: Redis answers; raises Unavailable (``redis_unavailable``) when it does not."""
        try:
            self.redis.ping()
        except RedisError as exc:
            raise Unavailable(f"redis is not reachable: {exc}", code="redis_unavailable") from exc

    # ------------------------------------------------------------------ create and read
    def create(
        self,
        job: NewJob,
        *,
        idempotency_key: str | None,
        idempotency_ttl_s: int,
        max_queued: int,
        upload_ids: Sequence[str] = (),
        fingerprint: str = "",
    ) -> Created:
        """Create ``job`` queued, or return the job an earlier request with the same key created.

        ``fingerprint`` identifies the request's content (options and files); an earlier request
        with the same key but another fingerprint raises IdempotencyKeyReused. Raises TooManyJobs
        when the tenant has ``max_queued`` queued jobs, and Conflict when a presigned upload it
        names was never issued to this tenant or is used by another job.
        """
        fields: dict[str, str] = {
            "id": job.id,
            "tenant": job.tenant,
            "status": Status.QUEUED.value,
            "engine": job.engine,
            "created_at": repr(job.created_at),
            "expires_at": repr(job.expires_at),
            "options": job.options.model_dump_json(exclude={"webhook_events_filter"}),
            "inputs": job.inputs.to_json(),
            "webhook_url": job.webhook_url or "",
            "webhook_events": encode_events(job.webhook_events),
            "deliveries": "0",
            "cancel_requested": "0",
            "data_removed": "0",
        }
        digest = idempotency_digest(idempotency_key) if idempotency_key else ""
        flat = [item for pair in fields.items() for item in pair]
        outcome, value = self._create(
            args=[
                self._prefix,
                job.id,
                job.tenant,
                job.engine,
                repr(job.created_at),
                repr(job.expires_at),
                digest,
                idempotency_ttl_s,
                max_queued,
                ",".join(upload_ids),
                fingerprint,
                *flat,
            ]
        )
        outcome, value = _decode(outcome), _decode(value)
        if outcome == "key_reused":
            raise _key_reused(value)
        if outcome == "too_many":
            raise TooManyJobs(f"the tenant already has {max_queued} queued jobs; wait for some to start")
        if outcome == "upload_unavailable":
            raise Conflict(
                f"upload {value} was not issued to this tenant or is already used by a job",
                field="inputs",
                code="upload_unavailable",
            )
        return Created(job_id=value, created=outcome == "created")

    def find_idempotent(self, tenant: str, idempotency_key: str, fingerprint: str | None = None) -> str | None:
        """The job an earlier request with this Idempotency-Key created, if any.

        With a ``fingerprint``, an earlier request whose content differed raises IdempotencyKeyReused.
        """
        stored = optional_text(self.redis.get(self.keys.idempotency(tenant, idempotency_digest(idempotency_key))))
        if stored is None:
            return None
        job_id, _, stored_fingerprint = stored.partition(" ")
        if fingerprint is not None and stored_fingerprint not in ("", fingerprint):  # "": stored before fingerprints
            raise _key_reused(job_id)
        return job_id

    def get(self, job_id: str) -> JobRecord | None:
        """The job or its tombstone, whoever owns it (worker side)."""
        raw = text_hash(self.redis.hgetall(self.keys.job(job_id)))
        return JobRecord.from_hash(raw) if raw else None

    def get_for(self, tenant: str, job_id: str) -> JobRecord:
        """The tenant's job. Raises NotFound (also for another tenant's job) or Gone (deleted)."""
        record = self.get(job_id) if JOB_ID.match(job_id) else None
        if record is None or record.tenant != tenant:
            raise NotFound(f"no job {job_id}", field="id")
        if record.deleted:
            raise Gone(f"job {job_id} was deleted", field="id")
        return record

    def list(self, tenant: str, *, status: Status | None, cursor: str | None, limit: int) -> Page:
        """The tenant's jobs, newest first; ``next_cursor`` continues after the last one."""
        index = self.keys.tenant_status(tenant, status.value) if status else self.keys.tenant_jobs(tenant)
        upper = f"({decode_cursor(cursor)}" if cursor else "+"
        ids = texts(self.redis.zrevrangebylex(index, upper, "-", start=0, num=limit + 1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids[:limit]:
            pipe.hgetall(self.keys.job(job_id))
        items = [JobRecord.from_hash(raw) for raw in pipe.execute() if raw]
        next_cursor = encode_cursor(ids[limit - 1]) if len(ids) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def queue_position(self, record: JobRecord) -> int | None:
        """How many queued jobs of the same engine are ahead of this one (0 = next); None unless queued."""
        if record.status is not Status.QUEUED:
            return None
        # Without ``withscore`` a ZRANK reply is the rank or None; redis-py types both forms.
        return cast(int | None, self.redis.zrank(self.keys.waiting(record.engine), record.id))

    def queued_count(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued (its queue quota counts them)."""
        return int(self.redis.zcard(self.keys.tenant_status(tenant, Status.QUEUED.value)))

    def queue_depth(self, engine: str) -> tuple[int, int]:
        """(waiting, active) jobs of an engine."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.waiting(engine))
        pipe.scard(self.keys.active(engine))
        waiting, active = pipe.execute()
        return int(waiting), int(active)

    # ------------------------------------------------------------------ client transitions
    def cancel(self, tenant: str, job_id: str, *, cancel_grace_s: float, now: float | None = None) -> Transition:
        """Cancel a queued job at once, or ask a running one to stop; a terminal job is left as is."""
        if not JOB_ID.match(job_id):
            raise NotFound(f"no job {job_id}", field="id")
        outcome, delivery = self._cancel(args=[self._prefix, job_id, tenant, _now(now), cancel_grace_s])
        outcome = _decode(outcome)
        if outcome == "missing":
            raise NotFound(f"no job {job_id}", field="id")
        if outcome == "gone":
            raise Gone(f"job {job_id} was deleted", field="id")
        return Transition(outcome=outcome, delivery=_delivery(delivery))

    def tombstone(self, tenant: str, job_id: str, *, ttl_s: int, now: float | None = None) -> None:
        """Replace a terminal job by its tombstone (its data must already be removed)."""
        outcome, detail = self._tombstone(args=[self._prefix, job_id, tenant, _now(now), ttl_s])
        outcome = _decode(outcome)
        if outcome == "missing":
            raise NotFound(f"no job {job_id}", field="id")
        if outcome == "gone":
            raise Gone(f"job {job_id} was deleted", field="id")
        if outcome == "conflict":
            raise Conflict(
                f"job {job_id} is {_decode(detail)}; cancel it and wait until it ends",
                field="id",
                code="job_not_terminal",
            )

    # ------------------------------------------------------------------ worker transitions
    def claim(
        self,
        job_id: str,
        *,
        owner: str,
        lease_ttl_s: float,
        max_deliveries: int,
        run_deadline: float,
        now: float | None = None,
    ) -> Claim:
        """Start a run of ``job_id`` as ``owner`` (unique per run), taking its lease."""
        poisoned = ErrorInfo(
            code="worker_lost",
            message=f"the job was started {max_deliveries} times and its worker stopped every time",
        )
        expired = ErrorInfo(code="queue_ttl_exceeded", message="the job was not started before its queue deadline")
        result = [
            _decode(v)
            for v in self._claim(
                args=[
                    self._prefix,
                    job_id,
                    owner,
                    _now(now),
                    int(lease_ttl_s * 1000),
                    max_deliveries,
                    run_deadline,
                    poisoned.to_json(),
                    expired.to_json(),
                ]
            )
        ]
        outcome = result[0]
        if outcome == "claimed":
            return Claim("claimed", delivery=result[2] or None, attempt=int(result[1]))
        if outcome == "leased":
            return Claim("leased", lease_remaining_s=max(int(result[1]), 0) / 1000)
        if outcome in ("expired", "canceled", "poisoned"):
            return Claim(outcome, delivery=result[1] or None)  # type: ignore[arg-type]
        return Claim(outcome)  # type: ignore[arg-type]

    def heartbeat(
        self, job_id: str, *, owner: str, lease_ttl_s: float, node: str = "", now: float | None = None
    ) -> Beat:
        """Renew the lease, taking it back if it ran out while Redis was unreachable and nobody else
        claimed the job; report a cancel request, or a shutdown of worker ``node``."""
        lease_ms = int(lease_ttl_s * 1000)
        return Beat(int(self._heartbeat(args=[self._prefix, job_id, owner, lease_ms, _now(now), node])))

    def report_progress(
        self,
        job_id: str,
        *,
        owner: str,
        progress: ProgressEvent,
        webhook_interval_s: float,
        lease_ttl_s: float | None = None,
        now: float | None = None,
    ) -> ProgressAck:
        """Record progress if ``owner`` holds the run. With ``lease_ttl_s``, a lease that ran out
        while Redis was unreachable is taken back (as :meth:`heartbeat` does)."""
        lease_ms = int(lease_ttl_s * 1000) if lease_ttl_s is not None else 0
        outcome, cancel, delivery = self._progress(
            args=[self._prefix, job_id, owner, _now(now), json.dumps(asdict(progress)), webhook_interval_s, lease_ms]
        )
        return ProgressAck(
            lost=_decode(outcome) == "lost", cancel_requested=_decode(cancel) == "1", delivery=_delivery(delivery)
        )

    def complete(
        self,
        job_id: str,
        *,
        owner: str,
        status: Status,
        error: ErrorInfo | None = None,
        output_key: str = "",
        report_key: str = "",
        report: dict[str, object] | None = None,
        now: float | None = None,
    ) -> Transition:
        """End the run ``owner`` holds. Outcomes: done, already (terminal), lost (lease gone), missing."""
        if not status.is_terminal:
            raise ValueError(f"complete() needs a terminal status, got {status}")
        outcome, detail = self._complete(
            args=[
                self._prefix,
                job_id,
                owner,
                _now(now),
                status.value,
                error.to_json() if error else "",
                output_key,
                report_key,
                json.dumps(report) if report is not None else "",
            ]
        )
        outcome, detail = _decode(outcome), _decode(detail)
        return Transition(outcome=outcome, delivery=detail or None if outcome == "done" else None, detail=detail)

    # ------------------------------------------------------------------ sweeper
    def force(
        self,
        job_id: str,
        *,
        expected: Literal["queued", "running"],
        status: Status,
        error: ErrorInfo | None,
        now: float | None = None,
    ) -> Transition:
        """End a job that is still ``expected`` (deadlines, cancel fallback); otherwise skip it."""
        outcome, detail = self._force(
            args=[
                self._prefix,
                job_id,
                _now(now),
                expected,
                status.value,
                error.to_json() if error else "",
            ]
        )
        outcome, detail = _decode(outcome), _decode(detail)
        return Transition(outcome=outcome, delivery=detail or None if outcome == "done" else None, detail=detail)
