"""What every service process talks to: one Redis client with the stores over it, and the bucket.

The API's ``api.services.Services`` and the workers' ``worker.context.WorkerContext`` extend
:class:`Backends` with their own collaborators; both connect the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store.identities import IdentityStore
from jobs.store.jobs import JobStore
from jobs.store.uploads import Uploads
from jobs.store.workers import WorkerRegistry
from jobs.tenants.accounts import Tenants


def connect_redis(settings: Settings) -> redis.Redis:
    """The client every store shares: text replies, and a health check of idle pooled connections."""
    return redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)


@dataclass
class Backends:
    """Settings, the Redis client and the bucket; the stores over the client are built from them."""

    settings: Settings
    redis: redis.Redis
    storage: Storage
    store: JobStore = field(init=False)
    identities: IdentityStore = field(init=False)
    uploads: Uploads = field(init=False)
    tenants: Tenants = field(init=False)
    workers: WorkerRegistry = field(init=False)

    def __post_init__(self) -> None:
        prefix = self.settings.key_prefix
        self.store = JobStore(self.redis, prefix)
        self.identities = IdentityStore(self.redis, prefix)
        self.uploads = Uploads(self.redis, prefix)
        self.tenants = Tenants(self.redis, prefix, self.settings.effective_secret_key)
        self.workers = WorkerRegistry(self.redis, prefix)
