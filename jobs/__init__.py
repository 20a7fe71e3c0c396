"""What the API and the workers share: settings, the Redis store (``store/``), S3 storage, tenants
(``tenants/``), upload checks (``media/``), webhooks (``webhooks/``), metrics and logs.

Nothing here imports FastAPI or the model: the web process, the workers and the CLI all build on
these modules, and each of them receives its collaborators (settings, Redis client, S3 client)
explicitly.
"""
