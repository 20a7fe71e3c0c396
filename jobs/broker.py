"""The Celery application's configuration, shared by the API (which only sends) and the workers.

One factory, so ``visibility_timeout`` and every other broker option are identical on both sides.
Messages carry ids only; the job store holds everything else. Policy for long GPU jobs on Redis
(see docs/service.md and docs/reliability.md): late acks, requeue when a worker process dies, one
message prefetched per process, reconnection after a broker outage, and quick restoration of a dead
worker's unacknowledged messages (the sweep sends a lost run again sooner still).
"""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from jobs.settings import Settings

log = logging.getLogger(__name__)

RESTORE_TASK = "ipfvr.restore"
TRAIN_IDENTITY_TASK = "ipfvr.train_identity"
DELIVER_WEBHOOK_TASK = "ipfvr.deliver_webhook"
DISPATCH_WEBHOOKS_TASK = "ipfvr.dispatch_webhooks"
SWEEP_TASK = "ipfvr.sweep"
WEBHOOK_QUEUE = "webhooks"  # short tasks: a light worker consumes them, never the GPU workers
MAINTENANCE_QUEUE = "maintenance"


def create_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    app = Celery("ipfvr", include=include or [])
    app.conf.update(
        broker_url=settings.effective_broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,  # a worker outlives a Redis restart: it reconnects, however long
        broker_connection_max_retries=None,
        # A run survives a broker connection loss: its lease, not the connection, says who owns the
        # job. Its message may then come back after the visibility timeout; the claim drops it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,  # must exceed the longest run
            "unacked_restore_interval": settings.broker_restore_interval_s,
            "unacked_restore_throttle": 1,  # scan on every interval (default: every 10th)
            "global_keyprefix": settings.broker_key_prefix,
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the job store is the system of record, not a result backend
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=MAINTENANCE_QUEUE,
        task_routes={
            DELIVER_WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
            DISPATCH_WEBHOOKS_TASK: {"queue": WEBHOOK_QUEUE},
            SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        worker_proc_alive_timeout=settings.model_load_timeout_s,  # the model loads in worker_process_init
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s},
            "dispatch-webhooks": {"task": DISPATCH_WEBHOOKS_TASK, "schedule": settings.webhook_dispatch_interval_s},
        },
    )
    return app


class Dispatcher:
    """Sends task messages by name (the sender does not import the task code)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def restore(self, job_id: str, engine: str) -> None:
        """Queue a job on its engine's queue; the task id is the job id (revoke targets it)."""
        self.app.send_task(RESTORE_TASK, args=[job_id], task_id=job_id, queue=self.settings.queue_for(engine))

    def train_identity(self, identity_id: str, engine: str) -> None:
        """Queue an identity's training on its engine's train queue; the task id is the identity id."""
        self.app.send_task(
            TRAIN_IDENTITY_TASK, args=[identity_id], task_id=identity_id, queue=self.settings.train_queue_for(engine)
        )

    def webhook(self, delivery_id: str | None) -> None:
        """Queue the first attempt of a webhook delivery recorded by a transition (None: nothing).

        Best effort: the delivery is already in the outbox, due now, so if the broker cannot take
        the message the retry dispatcher (beat) sends it on its next round.
        """
        if delivery_id is None:
            return
        try:
            self.app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE)
        except (OperationalError, RedisError) as exc:
            log.warning("webhook %s left to the retry dispatcher: the broker refused it: %s", delivery_id, exc)

    def terminate(self, job_id: str) -> None:
        """Hard-stop a run that ignored a cancel or its deadline (prefork pool: kills the child)."""
        self.app.control.revoke(job_id, terminate=True, signal="SIGKILL")
