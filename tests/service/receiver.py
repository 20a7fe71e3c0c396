"""A loopback webhook receiver for the service tests: verifies every delivery with ``standardwebhooks``.

Each test opens an :class:`Inbox` at its own path with the tenant's secret; the receiver verifies
every request to that path on arrival and records it, and can be told to answer the first N
requests with an error (to exercise retries).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: dict[str, Any] | None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Inbox:
    url: str
    secret: str
    fail_first: int = 0  # answer this many requests with 503
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            items = self.snapshot()
            if predicate(items):
                return items
            time.sleep(0.05)
        raise AssertionError(f"webhooks did not arrive as expected: {[r.headers.get('webhook-id') for r in items]}")


class WebhookReceiver:
    def __init__(self) -> None:
        self.inboxes: dict[str, Inbox] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                inbox = receiver.inboxes.get(self.path.split("?", 1)[0])  # a query (a token) may follow
                if inbox is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(inbox.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = None, False
                with inbox.lock:
                    inbox.received.append(Received(headers, body, verified, payload))
                    failing = len(inbox.received) <= inbox.fail_first
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def inbox(self, secret: str, *, fail_first: int = 0) -> Inbox:
        path = f"/hooks/{secrets.token_hex(6)}"
        inbox = Inbox(url=self.base_url + path, secret=secret, fail_first=fail_first)
        self.inboxes[path] = inbox
        return inbox

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def payload_status(received: Received) -> str:
    return json.loads(received.body)["status"]
