"""A throwaway local service stack for the service benchmarks: Redis, weed S3, and the API/worker runner.

Redis is the one on 127.0.0.1:6379 when it answers (db 14, keys under a fresh prefix, removed
afterwards), otherwise a private redis-server. Everything else runs under a temporary folder.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ipfvr.devstack import RedisServer, S3Server, Stack  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from jobs.tenants.accounts import Tenants  # noqa: E402


@dataclass
class LocalStack:
    stack: Stack  # starts the API and workers as child processes
    redis_url: str
    prefix: str  # every Redis key of this run starts with it
    tmp: Path  # logs under tmp / "logs", scratch under tmp / "work"
    env: dict[str, str]  # the environment the children run with

    def new_key(self, tenant: str) -> str:
        """A fresh API key of ``tenant``."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return Tenants(client, self.prefix, Settings().effective_secret_key).create_key(tenant)


@contextmanager
def local_stack(name: str, extra_env: Mapping[str, str] = {}) -> Iterator[LocalStack]:
    """Start Redis (or reuse it) and weed; stop them and remove this run's keys on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ipfvr-{name}-"))
    prefix = f"ipfvr-{name}-{secrets.token_hex(3)}"
    redis_server = RedisServer.reuse_or_start(tmp / "redis", db=14)
    s3 = S3Server.start(tmp / "s3")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "IPFVR_REDIS_URL": redis_server.url,
        "IPFVR_KEY_PREFIX": prefix,
        "IPFVR_BROKER_KEY_PREFIX": f"{prefix}:celery:",
        "IPFVR_MAX_QUEUED_PER_TENANT": "1000000",
        "IPFVR_WORK_DIR": str(tmp / "work"),
        **s3.env(bucket=f"ipfvr-{name}"),
        **extra_env,
    }
    stack = Stack(env=env, log_dir=tmp / "logs")
    try:
        yield LocalStack(stack=stack, redis_url=redis_server.url, prefix=prefix, tmp=tmp, env=env)
    finally:
        stack.stop()
        s3.child.stop()
        cleanup = redis.Redis.from_url(redis_server.url)
        for stale in cleanup.scan_iter(match=f"{prefix}*", count=1000):
            cleanup.delete(stale)
        if redis_server.child is not None:
            redis_server.child.stop()
