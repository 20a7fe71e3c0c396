"""The API process's collaborators, built once from the settings and closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.backends import Backends, connect_redis
from jobs.broker import Dispatcher, create_celery
from jobs.media.checks import MediaLimits
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.tenants.ratelimit import TokenBucket
from jobs.webhooks.ssrf import Resolver, TargetPolicy, system_resolver


@dataclass
class Services(Backends):
    dispatcher: Dispatcher
    webhook_policy: TargetPolicy
    rate_limiter: TokenBucket
    media_limits: MediaLimits

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Resolver = system_resolver) -> Services:
        """Connect everything; ``resolver`` is the DNS the webhook check uses."""
        client = connect_redis(settings)
        storage = Storage.from_settings(settings)
        if settings.s3_create_bucket:
            storage.ensure_bucket()
        return cls(
            settings=settings,
            redis=client,
            storage=storage,
            dispatcher=Dispatcher(create_celery(settings), settings),
            webhook_policy=TargetPolicy.from_settings(settings, resolver),
            rate_limiter=TokenBucket(
                client, settings.key_prefix, rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
            ),
            media_limits=MediaLimits.from_settings(settings),
        )

    def close(self) -> None:
        self.redis.close()
        self.dispatcher.app.close()
