"""The journal of what failed runs may have left in the bucket (``P:s3:abandoned``), scored by when to act.

Two kinds of entry: a multipart upload to abort (it holds storage nobody sees), and a whole object
to delete unless its job succeeded after all (a visible partial result). The worker writes them
(``worker/upload_journal.py``); the sweep settles what is due once S3 answers again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from jobs.store.keys import Keys
from jobs.store.replies import texts


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


class Leftovers:
    """The journal in Redis (``decode_responses=True`` client)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def add(self, leftover: Leftover, *, due: float) -> None:
        """Journal ``leftover`` to be settled at ``due`` (again: moves an entry's time)."""
        self.redis.zadd(self.keys.abandoned_uploads(), {leftover.member(): due})

    def remove(self, leftover: Leftover) -> None:
        self.redis.zrem(self.keys.abandoned_uploads(), leftover.member())

    def due(self, *, now: float, limit: int = 100) -> list[Leftover]:
        """The entries due at ``now``, earliest first."""
        members = texts(self.redis.zrangebyscore(self.keys.abandoned_uploads(), "-inf", now, start=0, num=limit))
        return [Leftover.from_member(m) for m in members]
