"""The journal of result uploads that may need cleaning up, and the sweep step that cleans them.

A run writes its outputs to deterministic keys. If S3 goes away mid-upload, two things can be left
behind where nobody sees them fail: a multipart upload that could not be aborted (its parts use
storage, invisible), and a whole object of a run that then failed (a visible partial result).
The worker records both (``jobs/store/leftovers.py``, scored by when to act), and the sweeper acts
once S3 answers again. A multipart upload is recorded as soon as it is created, due only after
the hard time limit, so an upload whose worker was killed is aborted too.

Journal writes are best effort: if Redis is down as well, the bucket's lifecycle rule for
incomplete multipart uploads is the backstop (see docs/reliability.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from jobs.model import Status
from jobs.storage import Storage, StorageUnavailable
from jobs.store.jobs import JobStore
from jobs.store.leftovers import Leftover, Leftovers

log = logging.getLogger(__name__)


class UploadJournal:
    """The :class:`jobs.storage.UploadJournal` of one run's result uploads."""

    def __init__(
        self, leftovers: Leftovers, job_id: str, *, stale_after_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._leftovers = leftovers
        self._job_id = job_id
        self._stale_after_s = stale_after_s  # a live run never uploads longer than this (hard time limit)
        self._clock = clock

    def begun(self, key: str, upload_id: str) -> None:
        self._add(Leftover(self._job_id, key, upload_id), due=self._clock() + self._stale_after_s)

    def ended(self, key: str, upload_id: str) -> None:
        try:
            self._leftovers.remove(Leftover(self._job_id, key, upload_id))
        except RedisError as exc:  # the sweeper's abort of a finished upload is a harmless no-op
            log.warning("could not clear the journal entry of %s: %s", key, exc)

    def abandoned(self, key: str, upload_id: str) -> None:
        self._add(Leftover(self._job_id, key, upload_id), due=self._clock())

    def discard(self, keys: list[str]) -> None:
        """Objects of this run that must go unless the job succeeds after all."""
        for key in keys:
            self._add(Leftover(self._job_id, key, ""), due=self._clock())

    def _add(self, leftover: Leftover, *, due: float) -> None:
        try:
            self._leftovers.add(leftover, due=due)
        except RedisError as exc:
            log.warning("could not journal %s of job %s: %s", leftover.key, leftover.job_id, exc)


class LeftoverCleaner:
    """The sweep step: abort abandoned multipart uploads, delete partial results of failed jobs."""

    def __init__(self, leftovers: Leftovers, store: JobStore, storage: Storage) -> None:
        self._leftovers = leftovers
        self._store = store
        self._storage = storage

    def run(self, *, now: float, retry_in_s: float, limit: int = 100) -> int:
        """Clean what is due; returns how many entries were settled. Stops at the first S3 failure
        (S3 is still down: the next sweep retries). A job still running is looked at again later."""
        settled = 0
        for leftover in self._leftovers.due(now=now, limit=limit):
            try:
                if leftover.upload_id:
                    self._storage.abort_upload(leftover.key, leftover.upload_id)
                else:
                    record = self._store.get(leftover.job_id)
                    if record is not None and not record.status.is_terminal:
                        self._leftovers.add(leftover, due=now + retry_in_s)
                        continue
                    if record is None or record.status is not Status.SUCCEEDED:
                        self._storage.delete([leftover.key])
            except StorageUnavailable as exc:
                log.warning("cleaning %s of job %s failed; retrying later: %s", leftover.key, leftover.job_id, exc)
                break
            self._leftovers.remove(leftover)
            settled += 1
        return settled
