"""The API process's collaborators, built once from the settings and closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from jobs.broker import Dispatcher, create_celery
from jobs.media.checks import MediaLimits
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store.identities import IdentityStore
from jobs.store.jobs import JobStore
from jobs.store.workers import WorkerRegistry
from jobs.tenants.accounts import Tenants
from jobs.tenants.ratelimit import TokenBucket
from jobs.webhooks.ssrf import Resolver, TargetPolicy, system_resolver


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    identities: IdentityStore
    storage: Storage
    tenants: Tenants
    workers: WorkerRegistry
    dispatcher: Dispatcher
    webhook_policy: TargetPolicy
    rate_limiter: TokenBucket
    media_limits: MediaLimits

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Resolver = system_resolver) -> Services:
        """Connect everything; ``resolver`` is the DNS the webhook check uses."""
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        storage = Storage.from_settings(settings)
        if settings.s3_create_bucket:
            storage.ensure_bucket()
        return cls(
            settings=settings,
            redis=client,
            store=JobStore(client, settings.key_prefix),
            identities=IdentityStore(client, settings.key_prefix),
            storage=storage,
            tenants=Tenants(client, settings.key_prefix, settings.effective_secret_key),
            workers=WorkerRegistry(client, settings.key_prefix),
            dispatcher=Dispatcher(create_celery(settings), settings),
            webhook_policy=TargetPolicy.from_settings(settings, resolver),
            rate_limiter=TokenBucket(client, settings.key_prefix, rate_per_s=settings.rate_limit_per_s,
                                     burst=settings.rate_limit_burst),
            media_limits=MediaLimits.from_settings(settings),
        )

    def close(self) -> None:
        self.redis.close()
        self.dispatcher.app.close()
