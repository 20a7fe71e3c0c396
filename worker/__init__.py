"""Celery workers: thin tasks that take an id, and the resident restore model with its lifecycle.

Entry points:

* ``celery -A worker.restore_worker worker -Q restore.<engine>,train.<engine> --pool prefork -c 1`` — one per GPU;
  loads the model once in its child process and runs restore jobs.
* ``celery -A worker.celery_app worker -Q webhooks,maintenance`` — webhook deliveries and the sweep
  (``celery -A worker.celery_app beat`` schedules the sweep and the webhook retry dispatcher).
"""
