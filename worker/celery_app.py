"""The workers' Celery app, configured from the environment (fails fast on a bad setting)."""

from __future__ import annotations

import os

from celery.signals import setup_logging

from jobs.broker import create_celery
from jobs.logs import configure_logging
from jobs.settings import get_settings

# Torch loads later, in the pool's child process. OpenMP's default busy-wait makes CPU inference
# ~10x slower when other processes share the cores (measured with the baseline engine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

settings = get_settings()
app = create_celery(settings, include=["worker.tasks"])


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Workers log like the API: redacted JSON lines (connecting here replaces Celery's own setup)."""
    configure_logging(settings, service="worker")
