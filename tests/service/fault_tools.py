"""Fault injection for the service tests (tests only): real dependencies that the test breaks on purpose.

* :class:`PrivateRedis` — a ``redis-server`` of the test's own (AOF, fsync always) that it can
  kill and start again on the same port and data directory.
* :class:`FaultProxy` — a TCP proxy in front of S3 that passes traffic, or resets every
  connection ("S3 is down"), optionally tripping by itself after N bytes from the client (S3
  going away in the middle of a multipart upload).
* :class:`FlakyReceiver` — a webhook receiver on a fixed port that can be down (nothing
  listening), answer 500, or answer too late, request by request; it verifies every signature.
* :func:`start_stack` — a service stack (API and workers) on any Redis and S3 endpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import redis
from botocore.config import Config
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ipfvr.devstack import Child, S3Server, Stack, free_port, wait_until
from jobs.settings import Settings
from jobs.store.workers import WorkerState
from tests.service.stack import FAST, REPO, ServiceStack, to_env


# ---------------------------------------------------------------------------------------------- Redis
class PrivateRedis:
    """A redis-server owned by one test: AOF with fsync on every write, so a crash loses nothing."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: Child | None = None

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        self.child = Child.start("redis", argv, env=dict(os.environ), log_path=self.dir / "redis.log")

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout_s=15, what="redis-server")

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown (nothing is saved on the way out)."""
        assert self.child is not None
        self.child.signal_group(signal.SIGKILL)
        self.child.popen.wait(timeout=5)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


# ---------------------------------------------------------------------------------------------- TCP proxy
def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees "connection reset", as when a server dies."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side
    sock.close()


class FaultProxy:
    """Loopback TCP proxy to ``upstream_port`` that the test can take down and bring back."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._up = True
        self._trip_after: int | None = None  # go down once this many client bytes passed
        self._sent = 0
        self.tripped = threading.Event()  # set when a trip took the proxy down
        self.refused = 0  # connections reset because the proxy was down
        self._closed = False
        threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True).start()

    @property
    def up(self) -> bool:
        return self._up

    def go_down(self) -> None:
        with self._lock:
            self._up = False
            conns, self._open = self._open, set()
        for conn in conns:
            _reset(conn)

    def come_up(self) -> None:
        with self._lock:
            self._up = True
            self._trip_after = None

    def trip_after(self, n_bytes: int) -> None:
        """Go down by itself once ``n_bytes`` more bytes came from clients."""
        with self._lock:
            self._sent = 0
            self._trip_after = n_bytes
            self.tripped.clear()

    def close(self) -> None:
        self._closed = True
        self.go_down()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self._count(len(data)):
                    self.tripped.set()
                    self.go_down()
                    return
                dst.sendall(data)
        except OSError:
            pass  # the connection was reset (by us, going down, or by the peer)
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._open.discard(sock)
                try:
                    sock.close()
                except OSError:
                    pass  # closed concurrently by the other pump

    def _count(self, n: int) -> bool:
        """Count client bytes; True when they reach the trip point."""
        with self._lock:
            if self._trip_after is None:
                return False
            self._sent += n
            return self._sent >= self._trip_after


# ---------------------------------------------------------------------------------------------- webhooks
@dataclass
class Arrival:
    at: float  # time.monotonic() when the request arrived
    webhook_id: str
    verified: bool
    answer: str  # what the receiver did: ok, error or slow


@dataclass
class FlakyReceiver:
    """A webhook receiver on a fixed port: ``start``/``stop`` it, and script its answers.

    ``script`` is consumed one entry per request: "ok" (204), "error" (500) or "slow" (answers
    204 only after ``slow_s``, past the sender's timeout); requests beyond it get ``then``.
    """

    secret: str
    slow_s: float = 2.0
    script: list[str] = field(default_factory=list)
    then: str = "ok"
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver._lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.then
                    receiver.arrivals.append(Arrival(time.monotonic(), headers.get("webhook-id", ""), verified, answer))
                if answer == "slow":
                    time.sleep(receiver.slow_s)
                try:
                    self.send_response(500 if answer == "error" else 204)
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting (its timeout) and closed the connection

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)


# ---------------------------------------------------------------------------------------------- stacks
def start_stack(
    *,
    redis_url: str,
    s3: S3Server,
    prefix: str,
    tmp: Path,
    s3_endpoint_url: str | None = None,
    restore_worker: bool = True,
    **overrides: Any,
) -> ServiceStack:
    """API, a copy-double restore worker and a service worker on ``redis_url`` and ``s3`` (or a proxy
    in front of it, ``s3_endpoint_url``), with the fast test settings and ``overrides``."""
    values = (
        FAST
        | {
            "redis_url": redis_url,
            "key_prefix": prefix,
            "broker_key_prefix": f"{prefix}:celery:",
            "work_dir": str(tmp / "work"),
            "s3_endpoint_url": s3_endpoint_url or s3.endpoint_url,
            "s3_access_key_id": s3.access_key,
            "s3_secret_access_key": s3.secret_key,
            "s3_bucket": prefix.replace("ipfvrtest-", "ipfvr-f-"),
            "s3_create_bucket": True,
        }
        | overrides
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), **to_env(values)}
    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    service = ServiceStack(
        Stack(env=env, log_dir=tmp / "logs"),
        settings,
        redis.Redis.from_url(redis_url, decode_responses=True),
        client,
        tmp,
    )
    if restore_worker:
        service.start_restore_worker("restore")
    service.stack.start_service_worker()
    service.stack.start_api()
    if restore_worker:
        service.wait_worker("restore", WorkerState.READY)
    return service


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds (20 Hz)."""
    wait_until(check, timeout_s=timeout_s, what=what, interval_s=0.05)


def exit_within(child: Child, timeout_s: float) -> int | None:
    """The child's exit code if it exits within ``timeout_s``, else None."""
    try:
        return child.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
