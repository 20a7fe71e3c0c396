"""Service commands of the ``ipfvr`` CLI: ``keys create``, ``dev``, ``submit``, ``status``, ``wait``.

``ipfvr.cli`` calls :func:`add_commands` with its sub-parser set; every handler takes the parsed
arguments and returns the exit code. The client commands read ``--url``/``--api-key`` or
``IPFVR_URL``/``IPFVR_API_KEY``; ``keys create`` and ``dev`` read the service settings
(``IPFVR_*``, see docs/service.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from ipfvr.arguments import add_option_flags, add_reference_photos, chosen_options
from ipfvr.client import DEFAULT_URL, ApiError, Client, Job

DEV_PREFIX = "ipfvr-dev"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_keys(subparsers)
    _add_dev(subparsers)
    _add_submit(subparsers)
    _add_status(subparsers)
    _add_wait(subparsers)


# ---------------------------------------------------------------------------------------------- parsers
def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("IPFVR_URL", DEFAULT_URL),
        help=f"service URL (default: $IPFVR_URL or {DEFAULT_URL})",
    )
    p.add_argument("--api-key", default=os.environ.get("IPFVR_API_KEY"), help="API key (default: $IPFVR_API_KEY)")


def _add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="manage API keys of the job service")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key for a tenant and print it (shown once)")
    create.add_argument("--tenant", required=True, help="tenant name: lower-case letters, digits, '-', '_'")
    create.add_argument("--redis-url", help="Redis of the service (default: IPFVR_REDIS_URL, else the local one)")
    create.add_argument(
        "--key-prefix",
        help="Redis key prefix of the service (default: IPFVR_KEY_PREFIX, else ipfvr; "
        f"the one `ipfvr dev` starts uses {DEV_PREFIX})",
    )
    create.set_defaults(func=run_keys_create)


def _add_dev(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="run the whole service locally: API, worker, Redis, S3 (Ctrl-C stops all)")
    p.add_argument("--port", type=int, default=8000, help="API port on 127.0.0.1 (default 8000)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".cache" / "ipfvr" / "dev",
        help="where S3 data, logs and a private Redis live (default ~/.cache/ipfvr/dev)",
    )
    p.add_argument("--engine", default="reference", help="engine the worker loads (default reference)")
    p.add_argument("--tenant", default="dev", help="tenant of the printed API key (default dev)")
    p.add_argument("--redis-db", type=int, default=0, help="Redis database number (default 0)")
    p.add_argument("--key-prefix", default=DEV_PREFIX, help=f"Redis key prefix of this stack (default {DEV_PREFIX})")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start empty: forget the earlier runs' jobs, keys, queued webhooks and files (the stack "
        "otherwise keeps them between runs, in Redis under its prefix and in --data-dir)",
    )
    p.set_defaults(func=run_dev)


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit a video and reference photos to the job service")
    p.add_argument("video", type=Path, help="video to restore")
    add_reference_photos(p, "photo of the person (repeat for several; optional with --identity)")
    p.add_argument("--identity", help="a ready identity of POST /v1/identities (idt_...): its photos and module")
    p.add_argument("--engine", help="engine (default: the service's)")
    add_option_flags(p, service=True)
    p.add_argument("--webhook", help="URL that receives signed job events")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument("-o", "--output", type=Path, help="with --wait: download the restored video here")
    _client_options(p)
    p.set_defaults(func=run_submit)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="print a job of the job service as JSON")
    p.add_argument("job_id")
    _client_options(p)
    p.set_defaults(func=run_status)


def _add_wait(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wait", help="wait until a job ends; exit 0 if it succeeded")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.add_argument("-o", "--output", type=Path, help="download the restored video here")
    _client_options(p)
    p.set_defaults(func=run_wait)


# ---------------------------------------------------------------------------------------------- client commands
def _client(args: argparse.Namespace) -> Client:
    if not args.api_key:
        raise ApiError(0, "missing_api_key", "pass --api-key or set IPFVR_API_KEY")
    return Client(args.url, args.api_key)


def _fail(exc: Exception) -> int:
    code = getattr(exc, "code", None)
    text = str(exc) if isinstance(exc, ApiError) or not code else f"{code}: {getattr(exc, 'message', exc)}"
    if isinstance(exc, httpx.TransportError):
        try:
            url = str(exc.request.url)
        except RuntimeError:  # raised before a request existed
            url = "the service"
        hint = " (is `ipfvr dev` running, and IPFVR_URL right?)" if isinstance(exc, httpx.ConnectError) else ""
        text = f"cannot reach {url}: {exc or type(exc).__name__}{hint}"
    print(f"ipfvr: error: {text}", file=sys.stderr)
    return 1


def _progress_line(job: Job) -> None:
    progress = job.get("progress") or {}
    where = f" {progress.get('stage')} {progress.get('percent', 0):.0f}%" if progress else ""
    position = f" (position {job['queue_position']})" if job.get("queue_position") is not None else ""
    print(f"{job['id']}: {job['status']}{where}{position}", file=sys.stderr)


def _finish(client: Client, job: Job, output: Path | None) -> int:
    print(json.dumps(job, indent=2))
    if job["status"] != "succeeded":
        return 1
    if output is not None:
        client.download(job, output)
        print(f"saved {output}", file=sys.stderr)
    return 0


def run_submit(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            job = client.submit(
                args.video,
                args.references or [],
                idempotency_key=args.idempotency_key,
                engine=args.engine,
                webhook=args.webhook,
                identity=args.identity,
                **chosen_options(args, service=True),
            )
            if not args.wait:
                print(json.dumps(job, indent=2))
                return 0
            return _finish(client, client.wait(job["id"], on_update=_progress_line), args.output)
    except (ApiError, httpx.HTTPError, OSError) as exc:
        return _fail(exc)


def run_status(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            print(json.dumps(client.get(args.job_id), indent=2))
            return 0
    except (ApiError, httpx.HTTPError) as exc:
        return _fail(exc)


def run_wait(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            job = client.wait(args.job_id, timeout_s=args.timeout, on_update=_progress_line)
            return _finish(client, job, args.output)
    except (ApiError, httpx.HTTPError, TimeoutError, OSError) as exc:
        return _fail(exc)


# ---------------------------------------------------------------------------------------------- keys
def run_keys_create(args: argparse.Namespace) -> int:
    import redis
    from pydantic import ValidationError

    from jobs.errors import ServiceError
    from jobs.settings import Settings
    from jobs.tenants.accounts import Tenants

    try:
        settings = Settings()
        client = redis.Redis.from_url(args.redis_url or settings.redis_url, decode_responses=True)
        prefix = args.key_prefix or settings.key_prefix
        key = Tenants(client, prefix, settings.effective_secret_key).create_key(args.tenant)
    except (ValidationError, ServiceError, redis.RedisError) as exc:
        return _fail(exc)
    print(key)
    print(f"API key for tenant {args.tenant!r}; it is shown only once.", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------- dev
def _forget(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix:`` (the stack's jobs, keys, queues); returns how many."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    return removed


class _DevLock:
    """One dev stack per data folder: an exclusive ``flock`` held while it runs (the OS drops it on exit)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def take(cls, path: Path, api_url: str) -> _DevLock | str:
        """The lock, or the API URL of the stack that holds it."""
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another port"
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.pwrite(fd, api_url.encode(), 0)
        return cls(fd)

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor releases the lock


def run_dev(args: argparse.Namespace) -> int:
    """Start Redis (or reuse the local one), weed S3, the API, a restore worker and a service worker."""
    import redis

    from ipfvr.devstack import RedisServer, S3Server, Stack
    from jobs.settings import Settings
    from jobs.store.workers import WorkerRegistry, WorkerState
    from jobs.tenants.accounts import Tenants

    data: Path = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    lock = _DevLock.take(data / "dev.lock", f"http://127.0.0.1:{args.port}")
    if isinstance(lock, str):
        print(f"ipfvr: error: an ipfvr dev stack is already running on {lock} (data dir {data})", file=sys.stderr)
        return 1
    stack: Stack | None = None
    servers: list[RedisServer | S3Server] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if args.fresh:
            for folder in ("s3", "work", "redis"):
                shutil.rmtree(data / folder, ignore_errors=True)
        redis_server = RedisServer.reuse_or_start(data / "redis", db=args.redis_db)
        servers.append(redis_server)
        if args.fresh:
            forgotten = _forget(redis.Redis.from_url(redis_server.url), args.key_prefix)
            print(f"fresh start: {forgotten} Redis keys under {args.key_prefix}: removed, and the stack's files")
        s3 = S3Server.start(data / "s3")
        servers.append(s3)
        overrides = {
            "IPFVR_ENV": "development",
            "IPFVR_REDIS_URL": redis_server.url,
            "IPFVR_KEY_PREFIX": args.key_prefix,
            "IPFVR_BROKER_KEY_PREFIX": f"{args.key_prefix}:celery:",
            "IPFVR_WORKER_ENGINE": args.engine,
            "IPFVR_PUBLIC_URL": f"http://127.0.0.1:{args.port}",
            "IPFVR_WEBHOOK_ALLOW_PRIVATE": "true",
            "IPFVR_WORK_DIR": str(data / "work"),
            **s3.env(bucket="ipfvr-dev"),
        }
        env = {**os.environ, **overrides}
        stack = Stack(env=env, log_dir=data / "logs")
        stack.start_restore_worker("restore", engine=args.engine)
        stack.start_service_worker("service")
        stack.start_api(port=args.port)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        secret = Settings().effective_secret_key  # the children read the same IPFVR_SECRET_KEY (or none)
        key = Tenants(client, args.key_prefix, secret).create_key(args.tenant)
        print(f"IP-FVR dev stack is up (logs in {data / 'logs'})")
        print(f"  Page      {stack.api_url}/#key={key}   (the web page, signed in with the key below)")
        print(f"  API       {stack.api_url}   (docs: {stack.api_url}/docs)")
        print(f"  S3        {s3.endpoint_url}")
        print(f"  Redis     {redis_server.url}" + ("" if redis_server.child else " (reused)"))
        print(f"  export IPFVR_URL={stack.api_url}")
        print(f"  export IPFVR_API_KEY={key}")
        print(
            f"  more keys: ipfvr keys create --tenant NAME --redis-url {redis_server.url} "
            f"--key-prefix {args.key_prefix}"
        )
        print("Press Ctrl-C to stop everything.", flush=True)
        registry = WorkerRegistry(client, args.key_prefix)
        announced = False
        while not stopping:
            if not announced and any(w.state is WorkerState.READY for w in registry.list()):
                print("worker ready: the model is loaded", flush=True)
                announced = True
            dead = [c for c in stack.children if not c.alive()]
            if dead:
                print(f"{dead[0].name} exited; its log:\n{dead[0].log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        print("stopping...", file=sys.stderr)
        if stack is not None:
            stack.stop()
        for server in reversed(servers):
            if server.child is not None:
                server.child.stop()
        lock.release()
