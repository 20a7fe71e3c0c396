"""Keeps a run's lease alive from a background thread and relays cancel requests.

The lease (``P:job:{id}:lease``) is what makes a redelivered or duplicated message harmless:
only its holder may report progress or finish the job. It expires ``lease_ttl_s`` after the last
heartbeat, so a dead worker's job can be taken over by the next delivery.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from redis.exceptions import RedisError

from jobs.store import JobStore, ProgressAck

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, store: JobStore, job_id: str, owner: str, *, lease_ttl_s: float, heartbeat_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._owner = owner
        self._lease_ttl_s = lease_ttl_s
        self._heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)
        self.cancel_requested = False  # the client asked to cancel
        self.lost = False  # the lease is gone: someone else owns the job now

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self._heartbeat_s + 5)

    def should_cancel(self) -> bool:
        """The restore loop's cancel check: stop when asked to, or when the job is no longer ours."""
        return self.cancel_requested or self.lost

    def note(self, ack: ProgressAck) -> None:
        """Take the cancel/lost flags a progress write returned (faster than the next heartbeat)."""
        self.cancel_requested = self.cancel_requested or ack.cancel_requested
        self.lost = self.lost or ack.lost

    def _loop(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                state = self._store.heartbeat(self._job_id, owner=self._owner, lease_ttl_s=self._lease_ttl_s)
            except RedisError as exc:  # transient: the lease survives a few missed beats
                log.warning("lease heartbeat for %s failed: %s", self._job_id, exc)
                continue
            if state < 0:
                self.lost = True
                return
            if state == 1:
                self.cancel_requested = True
