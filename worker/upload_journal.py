"""The journal of result uploads that may need cleaning up, and the sweep step that cleans them.

A run writes its outputs to deterministic keys. If S3 goes away mid-upload, two things can be left
behind where nobody sees them fail: a multipart upload that could not be aborted (its parts use
storage, invisible), and a whole object of a run that then failed (a visible partial result).
The worker records both here (``P:s3:abandoned``, scored by when to act), and the sweeper acts
once S3 answers again. A multipart upload is recorded as soon as it is created, due only after
the hard time limit, so an upload whose worker was killed is aborted too.

Journal writes are best effort: if Redis is down as well, the bucket's lifecycle rule for
incomplete multipart uploads is the backstop (see docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from jobs.model import Status
from jobs.storage import Storage, StorageUnavailable
from jobs.store.jobs import JobStore
from jobs.store.keys import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """Something in the bucket that a failed run may have left."""

    job_id: str
    key: str
    upload_id: str  # a multipart upload to abort; "" for a whole object to delete if the job failed

    def member(self) -> str:
        return json.dumps([self.job_id, self.key, self.upload_id])

    @classmethod
    def from_member(cls, member: str) -> Leftover:
        job_id, key, upload_id = json.loads(member)
        return cls(job_id=job_id, key=key, upload_id=upload_id)


class UploadJournal:
    """The :class:`jobs.storage.UploadJournal` of one run's result uploads, kept in Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, job_id: str, *, stale_after_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._key = keys.abandoned_uploads()
        self._job_id = job_id
        self._stale_after_s = stale_after_s  # a live run never uploads longer than this (hard time limit)
        self._clock = clock

    def begun(self, key: str, upload_id: str) -> None:
        self._add(Leftover(self._job_id, key, upload_id), due=self._clock() + self._stale_after_s)

    def ended(self, key: str, upload_id: str) -> None:
        try:
            self._redis.zrem(self._key, Leftover(self._job_id, key, upload_id).member())
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
            self._redis.zadd(self._key, {leftover.member(): due})
        except RedisError as exc:
            log.warning("could not journal %s of job %s: %s", leftover.key, leftover.job_id, exc)


class LeftoverCleaner:
    """The sweep step: abort abandoned multipart uploads, delete partial results of failed jobs."""

    def __init__(self, client: redis.Redis, store: JobStore, storage: Storage) -> None:
        self._redis = client
        self._key = store.keys.abandoned_uploads()
        self._store = store
        self._storage = storage

    def run(self, *, now: float, retry_in_s: float, limit: int = 100) -> int:
        """Clean what is due; returns how many entries were settled. Stops at the first S3 failure
        (S3 is still down: the next sweep retries). A job still running is looked at again later."""
        settled = 0
        due: list[str] = [str(m) for m in self._redis.zrangebyscore(self._key, "-inf", now, start=0, num=limit)]
        for member in due:
            leftover = Leftover.from_member(member)
            try:
                if leftover.upload_id:
                    self._storage.abort_upload(leftover.key, leftover.upload_id)
                else:
                    record = self._store.get(leftover.job_id)
                    if record is not None and not record.status.is_terminal:
                        self._redis.zadd(self._key, {member: now + retry_in_s})
                        continue
                    if record is None or record.status is not Status.SUCCEEDED:
                        self._storage.delete([leftover.key])
            except StorageUnavailable as exc:
                log.warning("cleaning %s of job %s failed; retrying later: %s", leftover.key, leftover.job_id, exc)
                break
            self._redis.zrem(self._key, member)
            settled += 1
        return settled
