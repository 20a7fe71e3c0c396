"""Helpers of the service tests: the fast test settings and a handle on a running stack."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from api.main import api_document
from ipfvr.devstack import Child, S3Server, Stack, wait_until
from jobs.settings import Settings
from jobs.store.workers import WorkerRegistry, WorkerState
from jobs.tenants.accounts import Tenants
from tests.service.contract import ErrorContract

REPO = Path(__file__).resolve().parents[2]
DOUBLE = "tests.service.doubles:load_copy_restorer"

# Settings of the test stacks: short leases and heartbeats so that redelivery and cancellation
# happen in seconds, small upload limits so that 413s need little data.
FAST: dict[str, Any] = {
    "env": "development",
    "restorer": DOUBLE,
    "engines": ["baseline", "slowload", "crash", "poison", "broken", "selfkill", "timeout", "shutdown"],
    "default_engine": "baseline",
    "worker_engine": "baseline",
    "visibility_timeout_s": 10,
    "broker_restore_interval_s": 1,
    "job_time_limit_s": 6,
    "job_kill_grace_s": 2,
    "lease_ttl_s": 2.0,
    "heartbeat_s": 0.5,
    "progress_interval_s": 0.0,
    "cancel_grace_s": 3.0,
    "sweep_interval_s": 1.0,
    "webhook_dispatch_interval_s": 1.0,
    "webhook_progress_interval_s": 0.2,
    "webhook_backoff_base_s": 0.5,
    "webhook_backoff_max_s": 2.0,
    "webhook_max_attempts": 4,
    "webhook_allow_private": True,
    "max_video_bytes": 2 * 1024 * 1024,
    "max_reference_bytes": 1024 * 1024,
    "max_references": 3,
    "max_queued_per_tenant": 20,
    "public_url": None,
}


def on_test_services(s3_server: S3Server, redis_url: str, prefix: str, bucket_tag: str) -> dict[str, Any]:
    """The fast settings on the test Redis and weed, under key prefix ``prefix`` and a bucket of its own."""
    return FAST | {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "broker_key_prefix": f"{prefix}:celery:",
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_access_key_id": s3_server.access_key,
        "s3_secret_access_key": s3_server.secret_key,
        "s3_bucket": prefix.replace("ipfvrtest-", bucket_tag),
        "s3_create_bucket": True,
    }


def to_env(values: dict[str, Any]) -> dict[str, str]:
    env = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"IPFVR_{name.upper()}"] = text
    return env


_CONTRACT: list[ErrorContract] = []


def _contract() -> ErrorContract:
    if not _CONTRACT:
        _CONTRACT.append(ErrorContract(api_document()))
    return _CONTRACT[0]


@dataclass
class ServiceStack:
    """A running service (API and workers) with handles to its Redis keys and bucket."""

    stack: Stack
    settings: Settings
    redis: redis.Redis
    s3: Any
    tmp: Path

    @property
    def url(self) -> str:
        return self.stack.api_url

    @property
    def bucket(self) -> str:
        return self.settings.s3_bucket

    def new_tenant(self) -> tuple[str, str]:
        tenant = f"t{secrets.token_hex(4)}"
        key = Tenants(self.redis, self.settings.key_prefix, self.settings.effective_secret_key).create_key(tenant)
        return tenant, key

    def client(self, api_key: str | None = None) -> httpx.Client:
        """An HTTP client of the API; every error it receives must be declared in the OpenAPI document."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, event_hooks={"response": [_contract()]})

    def objects(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]

    def start_restore_worker(self, name: str, engine: str = "baseline", **env: Any) -> Child:
        return self.stack.start_restore_worker(
            name,
            engine=engine,
            extra_env=to_env({"worker_engine": engine, **{k: v for k, v in env.items() if not k.startswith("IPFVR_")}})
            | {k: str(v) for k, v in env.items() if k.startswith("IPFVR_")},
        )

    def wait_worker(self, name: str, state: WorkerState, timeout_s: float = 30.0) -> None:
        registry = WorkerRegistry(self.redis, self.settings.key_prefix)

        def reached() -> bool:
            return any(w.hostname.startswith(f"{name}@") and w.state is state for w in registry.list())

        wait_until(reached, timeout_s=timeout_s, what=f"worker {name} {state}")

    def wait_job(
        self, client: httpx.Client, job_id: str, statuses: set[str], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} stayed {job.get('status')}, expected {statuses}: {job}")
