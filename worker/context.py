"""Per-process collaborators of a worker (Redis, S3, store, outbox, ...), built after fork.

Redis connection pools and boto3 clients must not cross a ``fork()``, so prefork children build
their own on first use; :func:`context` rebuilds when it finds itself in a new process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery

from jobs.backends import Backends, connect_redis
from jobs.broker import Dispatcher
from jobs.metrics import MetricsRecorder
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store.leftovers import Leftovers
from jobs.webhooks.outbox import Outbox


@dataclass
class WorkerContext(Backends):
    outbox: Outbox
    dispatcher: Dispatcher
    metrics: MetricsRecorder
    leftovers: Leftovers

    @classmethod
    def build(cls, settings: Settings, app: Celery) -> WorkerContext:
        client = connect_redis(settings)
        prefix = settings.key_prefix
        return cls(
            settings=settings,
            redis=client,
            storage=Storage.from_settings(settings),
            outbox=Outbox(client, prefix),
            dispatcher=Dispatcher(app, settings),
            metrics=MetricsRecorder(client, prefix),
            leftovers=Leftovers(client, prefix),
        )


_current: tuple[int, WorkerContext] | None = None


def context() -> WorkerContext:
    """This process's context (built on first use after each fork)."""
    global _current
    if _current is None or _current[0] != os.getpid():
        from worker.celery_app import app, settings

        _current = (os.getpid(), WorkerContext.build(settings, app))
    return _current[1]
