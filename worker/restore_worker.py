"""Entry point of a restore worker::

    celery -A worker.restore_worker worker -Q restore.<engine>,train.<engine> --pool prefork -c 1

It restores jobs (``restore.<engine>``) and trains identities (``train.<engine>``) with the same
resident model; a deployment may also run workers on ``train.<engine>`` alone.

Importing this module (instead of ``worker.celery_app``) is what makes a worker a restore worker:
it hooks the model's lifecycle to the prefork child process. The child loads the model in
``worker_process_init`` (the parent allows ``model_load_timeout_s`` for it), so the model is
resident before the first job and the worker publishes ``ready`` only once it is.

The main process also handles two faults its child cannot report itself:

* **Shutdown.** SIGTERM starts Celery's warm shutdown (no new messages; the running job goes on).
  The main process records ``P:drain:{node}`` = now + ``shutdown_grace_s``: a job still running
  then sees it at its next heartbeat, stops at its next step and is handed back to the queue, so
  the worker exits within the grace period (plus one step) without losing the job.
* **Hard time limit.** When Celery kills the child that overran ``hard_time_limit_s``, the main
  process fails the job as ``time_limit_exceeded``; the pool starts a fresh child (and model), so
  whatever the stuck run held on the GPU goes with the killed process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from billiard.exceptions import TimeLimitExceeded
from celery.signals import (
    celeryd_after_setup,
    task_failure,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)
from redis.exceptions import RedisError

from jobs.broker import RESTORE_TASK
from jobs.store.workers import WorkerRegistry
from worker import runtime
from worker.celery_app import app, settings
from worker.context import context

__all__ = ["app"]

log = logging.getLogger(__name__)

_nodename = "celery@unknown"


@celeryd_after_setup.connect
def _remember_nodename(sender: str, **_: Any) -> None:
    """Runs in the parent before the pool forks; children inherit the name. A drain mark left by an
    earlier worker with the same name (a restarted pod) must not hand this one's jobs back."""
    global _nodename
    _nodename = sender
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        WorkerRegistry(client, settings.key_prefix).clear_draining(sender)
    except RedisError as exc:
        log.warning("could not clear the drain mark of %s: %s", sender, exc)
    finally:
        client.close()


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    worker = runtime.WorkerRuntime(context(), app, _nodename)
    runtime.install(worker)
    worker.start()


@worker_process_shutdown.connect
def _unregister(**_: Any) -> None:
    worker = runtime.current()
    if worker is not None:
        worker.stop()


def _mark_draining(node: str, hand_back_at: float) -> None:
    ctx = context()
    ttl_s = int(settings.shutdown_grace_s + settings.hard_time_limit_s + 60)
    try:
        ctx.workers.mark_draining(node, hand_back_at=hand_back_at, ttl_s=ttl_s)
    except RedisError as exc:  # the job then runs to its end, or is redelivered after the kill
        log.error("could not mark %s as draining: %s", node, exc)
        return
    log.warning("shutting down: a running job is handed back at %.0f unless it ends before", hand_back_at)


@worker_shutting_down.connect
def _drain(sender: str, how: str = "Warm", **_: Any) -> None:
    """Runs inside the main process's signal handler: do the Redis write from a thread."""
    grace = settings.shutdown_grace_s if how == "Warm" else 0.0
    threading.Thread(target=_mark_draining, args=(sender, time.time() + grace), name="drain", daemon=True).start()


@task_failure.connect
def _fail_on_hard_time_limit(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    """In the main process, after the hard time limit killed the child running ``task_id``."""
    if getattr(sender, "name", None) != RESTORE_TASK or not isinstance(exception, TimeLimitExceeded) or not task_id:
        return
    ctx = context()
    try:
        transition = ctx.store.fail_time_limit(task_id, node=_nodename, time_limit_s=settings.job_time_limit_s)
    except RedisError as exc:  # the lease runs out; the sweeper's redelivery then runs the job again
        log.error("job %s passed its hard time limit, but failing it did not reach Redis: %s", task_id, exc)
        return
    log.error("job %s killed at its hard time limit (%s)", task_id, transition.outcome)
    ctx.dispatcher.webhook(transition.delivery)
