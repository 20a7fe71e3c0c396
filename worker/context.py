"""Per-process collaborators of a worker (Redis, S3, store, outbox, ...), built after fork.

Redis connection pools and boto3 clients must not cross a ``fork()``, so prefork children build
their own on first use; :func:`context` rebuilds when it finds itself in a new process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis
from celery import Celery

from jobs.broker import Dispatcher
from jobs.metrics import MetricsRecorder
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store.identities import IdentityStore
from jobs.store.jobs import JobStore
from jobs.store.workers import WorkerRegistry
from jobs.tenants.accounts import Tenants
from jobs.webhooks.outbox import Outbox


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    identities: IdentityStore
    storage: Storage
    tenants: Tenants
    outbox: Outbox
    dispatcher: Dispatcher
    metrics: MetricsRecorder
    registry: WorkerRegistry

    @classmethod
    def build(cls, settings: Settings, app: Celery) -> WorkerContext:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        prefix = settings.key_prefix
        return cls(
            settings=settings,
            redis=client,
            store=JobStore(client, prefix),
            identities=IdentityStore(client, prefix),
            storage=Storage.from_settings(settings),
            tenants=Tenants(client, prefix, settings.effective_secret_key),
            outbox=Outbox(client, prefix),
            dispatcher=Dispatcher(app, settings),
            metrics=MetricsRecorder(client, prefix),
            registry=WorkerRegistry(client, prefix),
        )


_current: tuple[int, WorkerContext] | None = None


def context() -> WorkerContext:
    """This process's context (built on first use after each fork)."""
    global _current
    if _current is None or _current[0] != os.getpid():
        from worker.celery_app import app, settings

        _current = (os.getpid(), WorkerContext.build(settings, app))
    return _current[1]
