"""A job run's progress: the restore loop's events, throttled, into the store and its webhooks."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from redis.exceptions import RedisError

from ipfvr_core.progress import ProgressEvent
from worker.context import WorkerContext
from worker.lease import LeaseKeeper

log = logging.getLogger(__name__)


class ProgressReporter:
    """The restore loop's progress callback: throttled writes to the store, relayed cancel flags."""

    def __init__(self, ctx: WorkerContext, job_id: str, owner: str, lease: LeaseKeeper) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._owner = owner
        self._lease = lease
        self._last_write = float("-inf")
        self._last_stage = ""

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        due = now - self._last_write >= self._ctx.settings.progress_interval_s
        if not due and event.stage == self._last_stage and event.fraction < 1.0:
            return
        self._last_write, self._last_stage = now, event.stage
        try:
            ack = self._ctx.store.report_progress(
                self._job_id,
                owner=self._owner,
                progress=replace(event, fraction=min(max(event.fraction, 0.0), 1.0)),
                webhook_interval_s=self._ctx.settings.webhook_progress_interval_s,
                lease_ttl_s=self._ctx.settings.lease_ttl_s,
            )
        except RedisError as exc:  # progress is advisory: keep restoring, write the next one
            log.warning("job %s: progress not recorded: %s", self._job_id, exc)
            return
        self._ctx.dispatcher.webhook(ack.delivery)
        self._lease.note(ack)

    def stage(self, name: str, fraction: float) -> None:
        """A service-side stage (download, upload): always written."""
        self._last_write = float("-inf")
        self(ProgressEvent(stage=name, current=0, total=1, fraction=fraction))
