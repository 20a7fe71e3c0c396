"""Fixtures of the job service tests: real processes on loopback.

* one ``weed mini`` S3 server for the session (every port picked free);
* the Redis on 127.0.0.1:6379 (a private ``redis-server`` if none answers), database
  ``IPFVR_TEST_REDIS_DB`` (default 13), with a fresh key prefix per stack, deleted at the end;
* a session stack: uvicorn (the real app), a restore worker (Celery prefork, concurrency 1) running
  the :class:`~tests.service.doubles.CopyRestorerDouble`, and a service worker (webhooks, sweep, beat);
* a loopback webhook receiver that verifies every delivery with ``standardwebhooks``.

Timings are shortened through settings (leases, heartbeats, visibility timeout), never by patching.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest
import redis
from botocore.config import Config

from ipfvr.devstack import RedisServer, S3Server, Stack
from jobs.settings import Settings
from jobs.store.workers import WorkerState
from tests.service.receiver import WebhookReceiver
from tests.service.stack import FAST, REPO, ServiceStack, to_env

TEST_DB = int(os.environ.get("IPFVR_TEST_REDIS_DB", "13"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("weed"))
    yield server
    server.child.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer.reuse_or_start(tmp_path_factory.mktemp("redis"), db=TEST_DB)
    yield server.url
    if server.child is not None:
        server.child.stop()


@pytest.fixture(scope="session")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[Callable[[], str]]:
    """Makes fresh key prefixes; every key under them is deleted at the end of the session."""
    made: list[str] = []

    def make() -> str:
        prefix = f"ipfvrtest-{secrets.token_hex(4)}"
        made.append(prefix)
        return prefix

    yield make
    client = redis.Redis.from_url(redis_url)
    for prefix in made:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


@pytest.fixture(scope="session")
def make_stack(
    s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServiceStack]]:
    """Builds a service stack with its own key prefix and bucket; ``overrides`` change settings."""
    stacks: list[ServiceStack] = []

    def make(
        *,
        api: bool = True,
        restore_worker: bool = True,
        service_worker: bool = True,
        worker_env: dict[str, Any] | None = None,
        ready_timeout_s: float = 30.0,
        **overrides: Any,
    ) -> ServiceStack:
        prefix = redis_prefix()
        tmp = tmp_path_factory.mktemp("stack")
        values = (
            FAST
            | {
                "redis_url": redis_url,
                "key_prefix": prefix,
                "broker_key_prefix": f"{prefix}:celery:",
                "work_dir": str(tmp / "work"),
                "s3_endpoint_url": s3_server.endpoint_url,
                "s3_access_key_id": s3_server.access_key,
                "s3_secret_access_key": s3_server.secret_key,
                "s3_bucket": prefix.replace("ipfvrtest-", "ipfvr-t-"),
                "s3_create_bucket": True,
            }
            | overrides
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), **to_env(values)}
        settings = Settings(**{k: v for k, v in values.items() if v is not None})
        stack = Stack(env=env, log_dir=tmp / "logs")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        service = ServiceStack(stack, settings, client, s3, tmp)
        stacks.append(service)
        if restore_worker:
            service.start_restore_worker("restore", **(worker_env or {}))
        if service_worker:
            stack.start_service_worker()
        if api:
            stack.start_api()
        if restore_worker:
            service.wait_worker("restore", WorkerState.READY, timeout_s=ready_timeout_s)
        return service

    yield make
    for service in stacks:
        service.stack.stop()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    """The shared stack: API, a copy-double restore worker on restore.baseline, a service worker."""
    return make_stack()


@pytest.fixture()
def tenant(stack: ServiceStack) -> Iterator[tuple[str, httpx.Client]]:
    name, key = stack.new_tenant()
    with stack.client(key) as client:
        yield name, client
