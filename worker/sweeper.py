"""The periodic sweep: lost runs, deadlines, the cancel fallback, retention, unused uploads and leftovers.

A running job whose lease ran out lost its worker (SIGKILL, OOM, a node gone): the sweep sends it
again at once, so redelivery takes ``lease_ttl_s`` + one sweep instead of the broker's
visibility timeout (hours, as it must exceed the longest job). Result uploads that a failed run
could not clean (S3 was down) are aborted or deleted once S3 answers.

Every step is an idempotent transition of the job store, so two sweeps (two beat instances, or a
sweep that overlaps the next) do no harm; a lock still keeps them from doing the work twice.
"""

from __future__ import annotations

import logging

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from jobs.model import ErrorInfo, Status
from jobs.storage import output_key, report_key, upload_key
from worker.context import WorkerContext
from worker.lease import redelivery_grace_s
from worker.upload_journal import LeftoverCleaner

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def run(self, *, now: float) -> bool:
        """One sweep; False when another sweep holds the lock."""
        with self.ctx.store.exclusive("sweep", ttl_s=self.ctx.settings.sweep_interval_s * 2) as held:
            if not held:
                return False
            self.rescue_lost_runs(now)
            self.expire_queued(now)
            self.enforce_run_deadlines(now)
            self.enforce_cancel_grace(now)
            self.remove_expired_data(now)
            self.remove_stale_uploads(now)
            self.clean_leftovers(now)
        return True

    def rescue_lost_runs(self, now: float) -> None:
        """Send again every running job whose worker stopped renewing its lease."""
        ctx = self.ctx
        grace = redelivery_grace_s(ctx.settings)
        for engine in ctx.settings.engines:
            for job_id in ctx.store.active(engine):
                target = ctx.store.rescue(job_id, redelivery_grace_s=grace, now=now)
                if target is None:
                    continue
                log.warning("job %s lost its worker; sending it again to %s", job_id, target)
                try:
                    ctx.dispatcher.restore(job_id, target)
                except (OperationalError, RedisError):
                    ctx.store.unmark_rescue(job_id)
                    raise

    def expire_queued(self, now: float) -> None:
        error = ErrorInfo(code="queue_ttl_exceeded", message="the job was not started before its queue deadline")
        for job_id in self.ctx.store.due("queue", now=now):
            t = self.ctx.store.force(job_id, expected="queued", status=Status.EXPIRED, error=error, now=now)
            self.ctx.dispatcher.webhook(t.delivery)

    def enforce_run_deadlines(self, now: float) -> None:
        settings = self.ctx.settings
        grace = redelivery_grace_s(settings)
        for job_id in self.ctx.store.due("run", now=now):
            t = self.ctx.store.run_deadline(
                job_id, redelivery_grace_s=grace, time_limit_s=settings.job_time_limit_s, now=now
            )
            if t.outcome == "timed_out":
                log.warning("job %s passed its run deadline; terminating it", job_id)
                self.ctx.dispatcher.terminate(job_id)
            self.ctx.dispatcher.webhook(t.delivery)

    def enforce_cancel_grace(self, now: float) -> None:
        for job_id in self.ctx.store.due("cancel", now=now):
            t = self.ctx.store.force(job_id, expected="running", status=Status.CANCELED, error=None, now=now)
            if t.outcome == "done":
                log.warning("job %s ignored its cancel request; terminating it", job_id)
                self.ctx.dispatcher.terminate(job_id)
                self.ctx.dispatcher.webhook(t.delivery)

    def remove_expired_data(self, now: float) -> None:
        older_than = now - self.ctx.settings.retention_s
        for job_id in self.ctx.store.retention_due(older_than=older_than):
            record = self.ctx.store.get(job_id)
            if record is not None:
                keys = [
                    *(record.inputs.object_keys() if record.inputs else []),
                    output_key(record.tenant, job_id),
                    report_key(record.tenant, job_id),
                ]
                self.ctx.storage.delete(keys)
            self.ctx.store.mark_data_removed(job_id)

    def clean_leftovers(self, now: float) -> None:
        LeftoverCleaner(self.ctx.leftovers, self.ctx.store, self.ctx.storage).run(
            now=now, retry_in_s=self.ctx.settings.hard_time_limit_s
        )

    def remove_stale_uploads(self, now: float) -> None:
        older_than = now - self.ctx.settings.upload_ttl_s
        for tenant, upload_id in self.ctx.uploads.stale(older_than=older_than):
            self.ctx.storage.delete([upload_key(tenant, upload_id)])
            self.ctx.uploads.forget(tenant, upload_id)
