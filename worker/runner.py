"""One run of one job, as plain steps: claim → download inputs → restore → upload → finish.

Idempotent by construction: the claim script refuses terminal jobs and jobs another live worker
holds; outputs go to deterministic keys, so a second run overwrites rather than duplicates; and
only the lease holder can finish the job, so a redelivered message never yields two results or
two ``completed`` webhooks. Library errors keep their stable codes in the job's ``error``.

Faults: job-store writes that must happen (claim, finish) are retried while Redis is unreachable,
progress writes are skipped; the result upload is retried with backoff and, if S3 stays down, the
job fails as ``storage_unavailable`` with its partial objects discarded (or journaled for the
sweeper). When the worker node shuts down, a run still going after the grace period stops at its
next step and hands the job back, to be claimed by another worker.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from redis.exceptions import RedisError

from ipfvr_core.errors import Canceled, InputError, IPFVRError
from jobs.model import ErrorInfo, JobRecord, Status
from jobs.storage import StorageUnavailable, output_key, report_key
from jobs.store.identities import IdentityStatus
from jobs.store.results import Claim, Transition
from worker.context import WorkerContext
from worker.lease import LeaseKeeper, redelivery_grace_s
from worker.progress_reporter import ProgressReporter
from worker.public_names import PublicNames, report_summary
from worker.restorer import IdentityUse, ResidentRestorer, RestoreRequest
from worker.retry import Backoff, retry
from worker.upload_journal import UploadJournal

log = logging.getLogger(__name__)

_CLAIM_TRIES = 2  # a held lease is waited out once; if it is still held, its holder is alive
_REDIS_BACKOFF_BASE_S = 0.2  # first delay of a job-store retry while Redis is unreachable
_REDIS_BACKOFF_MAX_S = 5.0  # longest delay between two job-store retries
_STORAGE_BACKOFF_MAX_S = 30.0  # longest delay between two result-upload retries


@dataclass
class Outcome:
    status: Status | None  # None: the lease was lost (someone else finishes the job) or the job is handed back
    hand_back: bool = False  # the worker is shutting down: give the job back for another worker
    error: ErrorInfo | None = None
    report: dict[str, Any] | None = None  # summary kept in the job
    frames: int = 0  # frames written (metrics)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # seconds per stage (metrics)


def _cuda() -> Any:
    """torch.cuda when the restorer loaded torch and a GPU is present, else None."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


def release_accelerator_memory() -> None:
    """Free what a finished run left: unreachable objects (an exception's frames hold tensors), then
    the CUDA allocator's cached blocks, so the next job starts from the resident model alone."""
    gc.collect()
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()


class JobRunner:
    def __init__(
        self,
        ctx: WorkerContext,
        restorer: ResidentRestorer,
        worker_id: str,
        *,
        node: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ctx = ctx
        self.restorer = restorer
        self.worker_id = worker_id  # "{node}:{pid}": runs are owned by "{worker_id}:{random}"
        self.node = node  # Celery node name; its shutdown hands the job back
        self._sleep = sleep
        s = ctx.settings
        self._redis_backoff = Backoff(
            base_s=_REDIS_BACKOFF_BASE_S, max_s=_REDIS_BACKOFF_MAX_S, horizon_s=s.redis_retry_horizon_s
        )
        self._storage_backoff = Backoff(
            base_s=s.storage_retry_base_s, max_s=_STORAGE_BACKOFF_MAX_S, horizon_s=s.storage_retry_horizon_s
        )
        self._identity_names: dict[str, str] = {}  # scratch name -> public name of the job's identity photos

    def run(self, job_id: str) -> None:
        settings = self.ctx.settings
        owner = f"{self.worker_id}:{uuid.uuid4().hex[:12]}"  # unique per run
        claim = self._claim(job_id, owner)
        if claim is None:
            return
        self.ctx.dispatcher.webhook(claim.delivery)
        record = self._store_call(lambda: self.ctx.store.get(job_id), what=f"reading job {job_id}")
        if record is None:
            return
        if claim.attempt == 1 and record.started_at is not None:
            self.ctx.metrics.observe(
                "job_queue_wait_seconds", record.started_at - record.created_at, engine=record.engine
            )
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with (
                LeaseKeeper(
                    self.ctx.store,
                    job_id,
                    owner,
                    lease_ttl_s=settings.lease_ttl_s,
                    heartbeat_s=settings.heartbeat_s,
                    node=self.node,
                ) as lease,
                tempfile.TemporaryDirectory(prefix=f"{job_id}-", dir=settings.work_dir) as scratch,
            ):
                outcome = self._execute(record, owner, lease, Path(scratch))
            self._finish(record, owner, outcome)
        finally:
            release_accelerator_memory()

    # ------------------------------------------------------------------ steps
    def _store_call(self, call: Callable[[], Any], *, what: str) -> Any:
        """A job-store call that must happen: retried while Redis is unreachable, up to the horizon."""
        return retry(call, backoff=self._redis_backoff, retry_on=(RedisError,), what=what, sleep=self._sleep)

    def _claim(self, job_id: str, owner: str) -> Claim | None:
        settings = self.ctx.settings
        claim = None
        for _ in range(_CLAIM_TRIES):
            claim = self._store_call(
                lambda: self.ctx.store.claim(
                    job_id,
                    owner=owner,
                    lease_ttl_s=settings.lease_ttl_s,
                    max_deliveries=settings.max_deliveries,
                    run_deadline=time.time() + settings.hard_time_limit_s + settings.lease_ttl_s,
                ),
                what=f"claiming job {job_id}",
            )
            if claim.outcome != "leased":
                break
            # A previous run's lease: its worker died (the lease runs out) or is alive (it is renewed).
            self._sleep(min(claim.lease_remaining_s, settings.lease_ttl_s) + settings.heartbeat_s / 2)
        assert claim is not None
        if claim.outcome == "claimed":
            return claim
        if claim.outcome == "leased":
            log.info("job %s: another live worker holds it; dropping this duplicate delivery", job_id)
        else:
            log.info("job %s: not run (%s); dropping this delivery", job_id, claim.outcome)
        self.ctx.dispatcher.webhook(claim.delivery)  # expired / canceled / poisoned end the job here
        return None

    def _execute(self, record: JobRecord, owner: str, lease: LeaseKeeper, scratch: Path) -> Outcome:
        ctx = self.ctx
        self._identity_names = {}
        reporter = ProgressReporter(ctx, record.id, owner, lease)
        stages: dict[str, float] = {}
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        try:
            started = time.monotonic()
            reporter.stage("download", 0.0)
            request = self._download(record, scratch)
            stages["download"] = time.monotonic() - started
            report = self.restorer.restore(request, progress=reporter, should_cancel=lease.should_cancel)
            if lease.lost:
                return Outcome(status=None)
            public = PublicNames(scratch, record, self._identity_names).report(report.to_dict())
            started = time.monotonic()
            reporter.stage("upload", 1.0)
            self._store_outputs(record, request.output, public, lease)
            stages["upload"] = time.monotonic() - started
            stages |= {name: seconds for name, seconds in report.timings_s.items() if name != "total"}
            if cuda is not None:
                ctx.metrics.observe("gpu_peak_memory_bytes", float(cuda.max_memory_allocated()), engine=record.engine)
            return Outcome(
                Status.SUCCEEDED, report=report_summary(public), frames=report.frames_total, stage_seconds=stages
            )
        except Canceled:
            if lease.lost:
                return Outcome(status=None)
            if lease.hand_back and not lease.cancel_requested:
                return Outcome(status=None, hand_back=True)
            return Outcome(Status.CANCELED)
        except StorageUnavailable as exc:  # a service error: before the library's, which it derives from
            log.error("job %s: storage failed: %s", record.id, exc)
            return Outcome(Status.FAILED, error=ErrorInfo(code="storage_unavailable", message=exc.message))
        except IPFVRError as exc:
            message = PublicNames(scratch, record, self._identity_names).text(exc.message)
            return Outcome(Status.FAILED, error=ErrorInfo(code=exc.code, message=message, field=exc.field))
        except SoftTimeLimitExceeded:
            limit = ctx.settings.job_time_limit_s
            return Outcome(
                Status.FAILED, error=ErrorInfo(code="time_limit_exceeded", message=f"the job ran longer than {limit} s")
            )
        except Exception:
            log.exception("job %s: unexpected error", record.id)
            return Outcome(
                Status.FAILED,
                error=ErrorInfo(code="internal_error", message="the worker hit an unexpected error; it was logged"),
            )

    def _download(self, record: JobRecord, scratch: Path) -> RestoreRequest:
        if record.inputs is None:
            raise StorageUnavailable(f"job {record.id} has no inputs")
        video = scratch / "input-video"
        self.ctx.storage.download_file(record.inputs.video, video)
        references = []
        for i, key in enumerate(record.inputs.references):
            path = scratch / f"reference-{i}"
            self.ctx.storage.download_file(key, path)
            references.append(path)
        identity = self._identity(record, scratch, references)
        return RestoreRequest(
            video=video,
            references=references,
            output=scratch / "restored.mp4",
            options=record.options,
            identity=identity,
        )

    def _identity(self, record: JobRecord, scratch: Path, references: list[Path]) -> IdentityUse | None:
        """The job's identity: its photos join ``references``; its module is fetched only if the engine lacks it."""
        identity_id = record.options.identity
        if identity_id is None:
            return None
        identity = self.ctx.identities.get(identity_id)
        if identity is None or identity.tenant != record.tenant or identity.status is not IdentityStatus.READY:
            raise InputError(
                f"identity {identity_id} was deleted after the job was created",
                field="identity",
                code="identity_not_found",
            )
        for i, key in enumerate(identity.photos):
            path = scratch / f"identity-photo-{i}"
            self.ctx.storage.download_file(key, path)
            references.append(path)
            self._identity_names[path.name] = f"{identity.name} photo {i + 1}"
        module_key = identity.module_key if identity.engine == record.engine else None
        fetch = None if module_key is None else (lambda path: self.ctx.storage.download_file(module_key, path))
        return IdentityUse(id=identity.id, fetch_module=fetch)

    def _store_outputs(self, record: JobRecord, video: Path, report: dict[str, Any], lease: LeaseKeeper) -> None:
        """Upload the video and the report, retrying with backoff while S3 is unreachable.

        Each attempt starts over (a failed multipart upload is aborted, or journaled when S3 refuses
        the abort too). If S3 stays down past the horizon, whatever this run did write is deleted,
        or journaled for the sweeper, so a failed job leaves no partial result in the bucket.
        """
        ctx = self.ctx
        keys = [output_key(record.tenant, record.id), report_key(record.tenant, record.id)]
        journal = UploadJournal(ctx.leftovers, record.id, stale_after_s=ctx.settings.hard_time_limit_s)
        body = json.dumps(report).encode()

        def upload() -> None:
            ctx.storage.upload_file(video, keys[0], "video/mp4", journal=journal)
            ctx.storage.put_bytes(keys[1], body, "application/json")

        try:
            retry(
                upload,
                backoff=self._storage_backoff,
                retry_on=(StorageUnavailable,),
                what=f"storing the result of job {record.id}",
                stop=lambda: lease.lost,
                sleep=self._sleep,
            )
        except StorageUnavailable:
            try:
                ctx.storage.delete(keys)
            except StorageUnavailable:
                journal.discard(keys)
            raise

    def _finish(self, record: JobRecord, owner: str, outcome: Outcome) -> None:
        ctx = self.ctx
        if outcome.hand_back:
            self._hand_back(record, owner)
            return
        if outcome.status is None:
            log.info("job %s: lease lost mid-run; another worker or the sweeper owns it", record.id)
            return
        succeeded = outcome.status is Status.SUCCEEDED
        status = outcome.status
        transition: Transition = self._store_call(
            lambda: ctx.store.complete(
                record.id,
                owner=owner,
                status=status,
                error=outcome.error,
                output_key=output_key(record.tenant, record.id) if succeeded else "",
                report_key=report_key(record.tenant, record.id) if succeeded else "",
                report=outcome.report,
            ),
            what=f"finishing job {record.id}",
        )
        if transition.outcome != "done":
            current = ctx.store.get(record.id)
            # Remove what this run uploaded only when no other run can own those (deterministic)
            # keys: the job is gone or ended without success. While another run is still going, its
            # own upload will overwrite them (deleting now could remove that run's fresh output).
            ended_without_output = current is None or (
                current.status.is_terminal and current.status is not Status.SUCCEEDED
            )
            if succeeded and ended_without_output:
                ctx.storage.delete([output_key(record.tenant, record.id), report_key(record.tenant, record.id)])
            log.info("job %s: finish refused (%s %s)", record.id, transition.outcome, transition.detail)
            return
        ctx.dispatcher.webhook(transition.delivery)
        final = ctx.store.get(record.id)
        if final is not None and final.started_at is not None and final.completed_at is not None:
            labels = {"engine": record.engine, "status": outcome.status.value}
            ctx.metrics.observe("job_predict_seconds", final.completed_at - final.started_at, **labels)
            ctx.metrics.observe("job_total_seconds", final.completed_at - final.created_at, **labels)
        for stage, seconds in outcome.stage_seconds.items():
            ctx.metrics.observe("job_stage_seconds", seconds, engine=record.engine, stage=stage)
        if outcome.frames:
            ctx.metrics.inc("frames_restored", outcome.frames, engine=record.engine)

    def _hand_back(self, record: JobRecord, owner: str) -> None:
        """The worker is shutting down: release the run and send the job to the queue again."""
        ctx = self.ctx
        engine = self._store_call(
            lambda: ctx.store.release(
                record.id,
                owner=owner,
                redelivery_grace_s=redelivery_grace_s(ctx.settings),
            ),
            what=f"handing back job {record.id}",
        )
        if engine is None:
            log.info("job %s: no longer this run's; nothing to hand back", record.id)
            return
        ctx.dispatcher.restore(record.id, engine)
        log.warning("job %s: handed back for another worker (this worker is shutting down)", record.id)
