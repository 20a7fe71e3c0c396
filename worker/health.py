"""Container health check of a restore worker: ``python -m worker.health`` exits 0 when ready or busy.

It reads the states the worker processes on this host publish (``jobs/store/workers.py``): the check
fails while the model loads, after a failed load, and when no heartbeat arrived recently.
"""

from __future__ import annotations

import socket
import sys

import redis

from jobs.settings import get_settings
from jobs.store.workers import WorkerRegistry, WorkerState


def main() -> int:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5)
    host = socket.gethostname()
    mine = [w for w in WorkerRegistry(client, settings.key_prefix).list() if w.hostname.split("@")[-1] == host]
    if not mine:
        print(f"no worker state published from {host}", file=sys.stderr)
        return 1
    states = ", ".join(f"{w.id}={w.state}" for w in mine)
    ok = all(w.state in (WorkerState.READY, WorkerState.BUSY) for w in mine)
    print(states, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
