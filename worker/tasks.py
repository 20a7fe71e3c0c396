"""Celery tasks: each takes an id and delegates. Delivery policy lives in the decorators.

* ``restore``: late ack and requeue if the process dies (redelivery is capped by the job store),
  soft/hard time limits, no Celery retries (a failed job is a result, not a transient error).
* ``train_identity``: the same policy, for an identity (on ``train.<engine>``, beside ``restore``).
* ``deliver_webhook``: one attempt; retries are scheduled in the outbox, not with ETA messages.
* ``dispatch_webhooks`` and ``sweep``: periodic (beat), idempotent, expire if not run in time.
"""

from __future__ import annotations

import time

from celery.exceptions import Reject

from jobs.broker import DELIVER_WEBHOOK_TASK, DISPATCH_WEBHOOKS_TASK, RESTORE_TASK, SWEEP_TASK, TRAIN_IDENTITY_TASK
from worker import runtime
from worker.celery_app import app, settings
from worker.context import context
from worker.sweeper import Sweeper
from worker.webhook_delivery import WebhookDelivery

# The policy of a long model run (a restore or an identity's training), in one place.
_MODEL_RUN = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.job_time_limit_s,
    "time_limit": settings.hard_time_limit_s,
    "max_retries": 0,
}


def _model_worker(what: str) -> runtime.WorkerRuntime:
    """This process's worker with its model loaded. Not a restore worker, or its model failed to
    load: the message goes back for another worker."""
    worker = runtime.current()
    if worker is None or worker.restorer is None:
        raise Reject(f"no restorer loaded in this process for {what}", requeue=True)
    return worker


@app.task(name=RESTORE_TASK, **_MODEL_RUN)
def restore(job_id: str) -> None:
    _model_worker(f"job {job_id}").run(job_id)


@app.task(name=TRAIN_IDENTITY_TASK, **_MODEL_RUN)
def train_identity(identity_id: str) -> None:
    _model_worker(f"identity {identity_id}").train(identity_id)


@app.task(
    name=DELIVER_WEBHOOK_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=int(settings.webhook_timeout_s * 3 + 30),
    max_retries=0,
)
def deliver_webhook(delivery_id: str) -> None:
    WebhookDelivery.from_context(context()).deliver(delivery_id)


# The two periodic tasks ack on receipt: beat sends them again every interval and both are
# idempotent, so there is nothing to restore. An unacknowledged message in flight when Redis goes
# away made kombu 5.x's restore-on-close raise (``conninfo`` already released) and the worker exit.
@app.task(name=DISPATCH_WEBHOOKS_TASK, acks_late=False, expires=settings.webhook_dispatch_interval_s * 2, max_retries=0)
def dispatch_webhooks() -> None:
    WebhookDelivery.from_context(context()).dispatch_due()


@app.task(name=SWEEP_TASK, acks_late=False, expires=settings.sweep_interval_s * 2, max_retries=0)
def sweep() -> None:
    Sweeper(context()).run(now=time.time())
