"""The workers' Celery app, configured from the environment (fails fast on a bad setting)."""

from __future__ import annotations

from jobs.broker import create_celery
from jobs.settings import get_settings

settings = get_settings()
app = create_celery(settings, include=["worker.tasks"])
