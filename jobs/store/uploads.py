"""Presigned uploads: issued to a tenant, named by at most one job, deleted by the sweep if never used.

``P:uploads`` holds ``{tenant}/{upload id}`` scored by the time it was issued. The create script
(``jobs/store/lua.py``) takes an upload out when a job names it, so what is left after
``upload_ttl_s`` was never used.
"""

from __future__ import annotations

import time

import redis

from jobs.store.keys import Keys
from jobs.store.replies import texts


class Uploads:
    """The presigned uploads not yet named by a job (``decode_responses=True`` client)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def register(self, tenant: str, upload_id: str, *, now: float | None = None) -> None:
        """Remember an issued upload so that exactly one job of this tenant can use it."""
        self.redis.zadd(self.keys.uploads(), {f"{tenant}/{upload_id}": time.time() if now is None else now})

    def stale(self, *, older_than: float, limit: int = 100) -> list[tuple[str, str]]:
        """(tenant, upload id) of uploads issued before ``older_than`` and never used."""
        members = texts(self.redis.zrangebyscore(self.keys.uploads(), "-inf", older_than, start=0, num=limit))
        return [(tenant, upload_id) for tenant, _, upload_id in (m.partition("/") for m in members)]

    def forget(self, tenant: str, upload_id: str) -> None:
        self.redis.zrem(self.keys.uploads(), f"{tenant}/{upload_id}")
