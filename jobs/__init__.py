"""What the API and the workers share: settings, the Redis job store, S3 storage, tenants, webhooks, metrics.

Nothing here imports FastAPI, Celery or the model: the web process, the workers and the CLI all
build on these modules, and each of them receives its collaborators (settings, Redis client, S3
client) explicitly.
"""
