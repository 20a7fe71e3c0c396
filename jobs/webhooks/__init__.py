"""Webhooks: Standard Webhooks signing, the SSRF guard, the delivery outbox in Redis, and one HTTP attempt.

The Celery task that ties them together is ``worker.tasks.deliver_webhook``; the policy (which
outcome is retried, the backoff) is in ``jobs/webhooks/policy.py``.
"""
