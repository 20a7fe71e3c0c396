"""Keeps a run's lease alive from a background thread and relays cancel and hand-back requests.

The lease (``P:job:{id}:lease``) is what makes a redelivered or duplicated message harmless:
only its holder may report progress or finish the job. It expires ``lease_ttl_s`` after the last
heartbeat, so a dead worker's job can be taken over by the next delivery. A heartbeat that fails
because Redis is unreachable is only logged: once Redis answers again the lease is renewed, or
taken back if it ran out meanwhile and nobody else claimed the job.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from redis.exceptions import RedisError

from jobs.settings import Settings
from jobs.store.jobs import JobStore
from jobs.store.results import Beat, ProgressAck

log = logging.getLogger(__name__)


def redelivery_grace_s(settings: Settings) -> float:
    """How long a job without a live run may wait for its next claim before it fails as worker_lost:
    the broker restores a dead worker's message after the visibility timeout, within one scan."""
    return settings.visibility_timeout_s + 2 * settings.broker_restore_interval_s + settings.lease_ttl_s


class LeaseKeeper:
    def __init__(
        self, store: JobStore, job_id: str, owner: str, *, lease_ttl_s: float, heartbeat_s: float, node: str = ""
    ) -> None:
        self._store = store
        self._job_id = job_id
        self._owner = owner
        self._lease_ttl_s = lease_ttl_s
        self._heartbeat_s = heartbeat_s
        self._node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)
        self.cancel_requested = False  # the client asked to cancel
        self.lost = False  # the lease is gone: someone else owns the job now
        self.hand_back = False  # the worker node is shutting down: stop and give the job back

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._heartbeat_s + 5)

    def should_cancel(self) -> bool:
        """The restore loop's cancel check: stop when asked to, when the job is no longer ours, or
        when the worker is shutting down."""
        return self.cancel_requested or self.lost or self.hand_back

    def note(self, ack: ProgressAck) -> None:
        """Take the cancel/lost flags a progress write returned (faster than the next heartbeat)."""
        self.cancel_requested = self.cancel_requested or ack.cancel_requested
        self.lost = self.lost or ack.lost

    def _loop(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                beat = self._store.heartbeat(
                    self._job_id, owner=self._owner, lease_ttl_s=self._lease_ttl_s, node=self._node
                )
            except RedisError as exc:  # transient: renewed or taken back once Redis answers again
                log.warning("lease heartbeat for %s failed: %s", self._job_id, exc)
                continue
            if beat is Beat.LOST:
                self.lost = True
                return
            if beat is Beat.CANCEL:
                self.cancel_requested = True
            elif beat is Beat.HAND_BACK:
                self.hand_back = True
