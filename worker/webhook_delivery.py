"""Webhook delivery and the retry dispatcher, as plain functions of the worker context.

An attempt renders the job object at send time (so a retried ``completed`` event carries fresh
presigned URLs), signs it with every active secret of the tenant, and records the outcome in the
outbox: delivered, retry later (exponential backoff, terminal and start events), or failed for
good (forbidden target, 410 Gone, attempts or retry horizon exhausted, or a progress event's only
attempt). A receiver that is down, answers an error or stays silent past ``webhook_timeout_s``
is just a failed attempt: the same ``webhook-id`` is sent again later.
"""

from __future__ import annotations

import logging
import os
import time

from jobs.render import render_job
from jobs.webhooks.policy import RetryPolicy
from jobs.webhooks.sender import WebhookSender
from jobs.webhooks.ssrf import TargetPolicy
from worker.context import WorkerContext

log = logging.getLogger(__name__)


class WebhookDelivery:
    def __init__(self, ctx: WorkerContext, sender: WebhookSender) -> None:
        self.ctx = ctx
        self.sender = sender
        s = ctx.settings
        self.retry = RetryPolicy(
            max_attempts=s.webhook_max_attempts,
            base_s=s.webhook_backoff_base_s,
            max_s=s.webhook_backoff_max_s,
            horizon_s=s.webhook_retry_horizon_s,
        )

    @classmethod
    def from_context(cls, ctx: WorkerContext) -> WebhookDelivery:
        """One instance (and one HTTP connection pool) per process."""
        global _instance
        if _instance is None or _instance[0] != os.getpid() or _instance[1].ctx is not ctx:
            s = ctx.settings
            policy = TargetPolicy.from_settings(s)
            _instance = (os.getpid(), cls(ctx, WebhookSender(policy, timeout_s=s.webhook_timeout_s)))
        return _instance[1]

    def deliver(self, delivery_id: str, *, now: float | None = None) -> None:
        ctx, settings = self.ctx, self.ctx.settings
        moment = time.time() if now is None else now
        delivery = ctx.outbox.claim(delivery_id, in_flight_s=settings.webhook_timeout_s * 2 + 30, now=moment)
        if delivery is None:
            return  # delivered already, not due yet, or another attempt is in flight
        record = ctx.store.get(delivery.job_id)
        if record is None or record.deleted:
            ctx.outbox.record(delivery_id, "failed", detail="the job was deleted", now=moment)
            return
        job = render_job(
            record,
            queue_position=ctx.store.queue_position(record),
            storage=ctx.storage,
            presign_expires_s=settings.presign_expires_s,
            base_url=str(settings.public_url or ""),
            now=moment,
        )
        body = job.model_dump_json().encode()
        secrets = ctx.tenants.webhook_secrets(delivery.tenant).signing(moment)
        result = self.sender.send(delivery.url, delivery.id, body, secrets, now=moment)
        if result.delivered:
            ctx.outbox.record(delivery_id, "delivered", detail=result.detail, now=moment)
            return
        next_at = self.retry.next_attempt(
            attempts=delivery.attempts,
            best_effort=delivery.best_effort,
            permanent=result.permanent,
            now=moment,
            recorded_at=delivery.created_at,
        )
        log.info(
            "webhook %s attempt %d failed (%s); next attempt %s",
            delivery_id,
            delivery.attempts,
            result.detail,
            "none" if next_at is None else f"in {next_at - moment:.0f} s",
        )
        ctx.outbox.record(
            delivery_id,
            "retry" if next_at is not None else "failed",
            detail=result.detail,
            next_attempt_at=next_at,
            now=moment,
        )

    def dispatch_due(self, *, now: float | None = None) -> int:
        """Queue an attempt for every due delivery not already queued; returns how many were queued."""
        ctx = self.ctx
        queued = 0
        for delivery_id in ctx.outbox.due(now=now):
            if ctx.outbox.mark_dispatched(delivery_id, ttl_s=ctx.settings.webhook_dispatch_interval_s * 6):
                ctx.dispatcher.webhook(delivery_id)
                queued += 1
        return queued


_instance: tuple[int, WebhookDelivery] | None = None
