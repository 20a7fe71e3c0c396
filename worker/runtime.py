"""A restore worker process: load the model once, publish the worker's state, run jobs.

Lifecycle (per prefork child, so the model never crosses a fork): ``starting`` while the factory
loads the model, then ``ready``; ``busy`` while a job runs; ``failed`` if loading raised, in which
case the worker stops consuming its queue so that jobs go to healthy workers. A heartbeat thread
republishes the state every ``heartbeat_s`` with a TTL, so a killed worker vanishes from the
registry by itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace

from celery import Celery
from redis.exceptions import RedisError

from jobs.store.workers import WorkerInfo, WorkerState
from worker.context import WorkerContext
from worker.identity_trainer import IdentityTrainer
from worker.restorer import ResidentRestorer, RestorerConfig, load_factory
from worker.runner import JobRunner

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """The model is not loaded (still loading, or loading failed)."""


class WorkerRuntime:
    def __init__(self, ctx: WorkerContext, app: Celery, nodename: str) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.app = app
        self.queue = settings.queue_for(settings.worker_engine)
        now = time.time()
        self.info = WorkerInfo(
            id=f"{nodename}:{os.getpid()}",
            state=WorkerState.STARTING,
            hostname=nodename,
            pid=os.getpid(),
            engine=settings.worker_engine,
            queue=self.queue,
            started_at=now,
            heartbeat_at=now,
        )
        self.restorer: ResidentRestorer | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="worker-heartbeat", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Publish ``starting``, load the model, then publish ``ready`` (or ``failed``)."""
        self._publish(state=WorkerState.STARTING)
        self._heartbeat.start()
        settings = self.ctx.settings
        started = time.monotonic()
        try:
            factory = load_factory(settings.restorer)
            self.restorer = factory(RestorerConfig.from_settings(settings))
        except Exception as exc:  # any load failure: report it and stop taking jobs
            log.exception("loading the restorer failed")
            self._publish(state=WorkerState.FAILED, error=f"{type(exc).__name__}: {exc}"[:500])
            self.app.control.cancel_consumer(self.queue, destination=[self.info.hostname])
            return
        load_s = time.monotonic() - started
        self.ctx.metrics.observe("model_load_seconds", load_s, engine=settings.worker_engine)
        log.info("restorer loaded in %.1f s; worker ready", load_s)
        self._publish(state=WorkerState.READY, model_load_s=round(load_s, 3))

    def stop(self) -> None:
        self._stop.set()
        self.ctx.workers.remove(self.info.id)

    def run(self, job_id: str) -> None:
        if self.restorer is None or self.info.state is WorkerState.FAILED:
            raise NotReady(f"worker {self.info.id} has no model loaded ({self.info.state})")
        self._publish(state=WorkerState.BUSY, job=job_id)
        try:
            JobRunner(self.ctx, self.restorer, self.info.id, node=self.info.hostname).run(job_id)
        finally:
            self._publish(state=WorkerState.READY, job=None)

    def train(self, identity_id: str) -> None:
        if self.restorer is None or self.info.state is WorkerState.FAILED:
            raise NotReady(f"worker {self.info.id} has no model loaded ({self.info.state})")
        self._publish(state=WorkerState.BUSY, job=identity_id)
        try:
            IdentityTrainer(self.ctx, self.restorer).run(identity_id)
        finally:
            self._publish(state=WorkerState.READY, job=None)

    # ------------------------------------------------------------------ state
    def _publish(self, **changes: object) -> None:
        with self._lock:
            self.info = replace(self.info, heartbeat_at=time.time(), **changes)  # type: ignore[arg-type]
            info = self.info
        self.ctx.workers.publish(info, ttl_s=self.ctx.settings.heartbeat_s * 3)

    def _beat(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_s):
            try:
                self._publish()
            except RedisError as exc:  # a Redis hiccup: the next beat retries; the key outlives 2 misses
                log.warning("worker heartbeat failed: %s", exc)


_runtime: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _runtime
    _runtime = runtime


def current() -> WorkerRuntime | None:
    """This process's runtime; None in processes that do not run restore jobs."""
    return _runtime
