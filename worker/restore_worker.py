"""Entry point of a restore worker: ``celery -A worker.restore_worker worker -Q restore.<engine> --pool prefork -c 1``.

Importing this module (instead of ``worker.celery_app``) is what makes a worker a restore worker:
it hooks the model's lifecycle to the prefork child process. The child loads the model in
``worker_process_init`` (the parent allows ``model_load_timeout_s`` for it), so the model is
resident before the first job and the worker publishes ``ready`` only once it is.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from worker import runtime
from worker.celery_app import app
from worker.context import context

__all__ = ["app"]

_nodename = "celery@unknown"


@celeryd_after_setup.connect
def _remember_nodename(sender: str, **_: Any) -> None:
    """Runs in the parent before the pool forks; children inherit the name."""
    global _nodename
    _nodename = sender


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
