"""Start the service's processes on loopback: S3 (``weed mini``), Redis, the API and Celery workers.

Used by ``ipfvr dev`` and by the service tests, so both run the same real processes. Each child
runs in its own session (process group), so stopping it also stops what it forked (Celery's
pool children); only processes started here are ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

_REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair(offset: int) -> tuple[int, int]:
    """Two free ports ``p`` and ``p + offset`` (a server that derives one port from the other)."""
    for _ in range(200):
        port = free_port()
        if port + offset > 65535:
            port -= offset  # ephemeral ports sit high; the pair fits below them
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b,
        ):
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port, port + offset
    raise RuntimeError(f"no two free ports {offset} apart on 127.0.0.1")


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} did not come up within {timeout_s:.0f} s")


@dataclass
class Child:
    """A started process (and its process group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd or _REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(name, popen, log_path)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to this child's process group (the child and what it forked)."""
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a warm shutdown for Celery), then SIGKILL after ``timeout_s``."""
        self.signal_group(signal.SIGTERM)
        self.reap(time.monotonic() + timeout_s)

    def reap(self, deadline: float) -> None:
        """Wait for the child until ``deadline`` (time.monotonic()), then SIGKILL its group."""
        if not self.alive():
            return
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class S3Server:
    """A ``weed mini`` instance with one S3 identity; every port is picked free (none collide)."""

    child: Child
    endpoint_url: str
    access_key: str
    secret_key: str

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        access_key: str = "ipfvr-dev",
        secret_key: str = "ipfvr-dev-secret",
        timeout_s: float = 60.0,
    ) -> S3Server:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "ipfvr",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        weed = Path(sys.executable).parent / "weed"
        ports = {
            name: free_port()
            for name in (
                "s3.port",
                "s3.port.grpc",
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.iceberg",
                "s3.port.lance",
            )
        }
        # mini's built-in maintenance worker dials the admin HTTP port + 10000 whatever -admin.port.grpc
        # says; any other pair makes it log a failed connection every 5 s.
        ports["admin.port"], ports["admin.port.grpc"] = free_port_pair(10000)
        argv = [
            str(weed if weed.exists() else "weed"),
            "mini",
            f"-dir={data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={config}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        child = Child.start("s3", argv, env=dict(os.environ), log_path=data_dir / "weed.log", cwd=data_dir)
        server = cls(child, f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key)

        def answers() -> bool:
            if not child.alive():
                raise RuntimeError(f"weed mini exited:\n{child.log_tail()}")
            try:
                return httpx.get(server.endpoint_url, timeout=1).status_code in (200, 403)
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout_s=timeout_s, what="weed mini S3")
        return server

    def env(self, bucket: str) -> dict[str, str]:
        return {
            "IPFVR_S3_ENDPOINT_URL": self.endpoint_url,
            "IPFVR_S3_ACCESS_KEY_ID": self.access_key,
            "IPFVR_S3_SECRET_ACCESS_KEY": self.secret_key,
            "IPFVR_S3_BUCKET": bucket,
            "IPFVR_S3_CREATE_BUCKET": "true",
        }


@dataclass
class RedisServer:
    """A reachable Redis: the one on 127.0.0.1:6379 if it answers, else a private ``redis-server``."""

    url: str
    child: Child | None = None  # None when an existing server is reused

    @classmethod
    def reuse_or_start(cls, work_dir: Path, *, db: int = 0) -> RedisServer:
        default = f"redis://127.0.0.1:6379/{db}"
        try:
            redis.Redis.from_url(default, socket_timeout=1).ping()
            return cls(default)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # no server there: start one below
        port = free_port()
        work_dir.mkdir(parents=True, exist_ok=True)
        child = Child.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(work_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            env=dict(os.environ),
            log_path=work_dir / "redis.log",
        )
        url = f"redis://127.0.0.1:{port}/{db}"

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout_s=15, what="redis-server")
        return cls(url, child)


@dataclass
class Stack:
    """The service's processes, started with one environment."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    api_url: str = ""

    def start_api(self, *, port: int | None = None, timeout_s: float = 30.0) -> Child:
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ]
        child = self._start("api", argv)
        self.api_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not child.alive():
                raise RuntimeError(f"the API exited:\n{child.log_tail()}")
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=timeout_s, what="the API")
        return child

    def start_restore_worker(
        self, name: str, *, engine: str = "reference", extra_env: dict[str, str] | None = None
    ) -> Child:
        argv = _celery_worker("worker.restore_worker", f"restore.{engine},train.{engine}", "prefork", 1, name)
        return self._start(name, argv, extra_env)

    def start_service_worker(self, name: str = "service", *, beat: bool = True) -> Child:
        argv = _celery_worker("worker.celery_app", "webhooks,maintenance", "threads", 4, name)
        if beat:
            argv += ["--beat", "--schedule", str(self.log_dir / f"{name}-beat-schedule")]
        return self._start(name, argv)

    def _start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Child:
        env = {**self.env, **(extra_env or {})}
        child = Child.start(name, argv, env=env, log_path=self.log_dir / f"{name}.log")
        self.children.append(child)
        return child

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every child at once: SIGTERM to all, then SIGKILL to those still running after ``timeout_s``."""
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            child.reap(deadline)
        self.children.clear()


def _celery_worker(app: str, queues: str, pool: str, concurrency: int, name: str) -> list[str]:
    """The command line of a Celery worker of ``app`` consuming ``queues``, as the images run it."""
    options = f"--pool {pool} --concurrency {concurrency} --hostname {name}@%h --loglevel INFO"
    return [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, *options.split()] + [
        "--without-gossip",
        "--without-mingle",
    ]
