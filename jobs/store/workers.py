"""Worker states in Redis: starting, ready, busy, failed, each with a heartbeat; and the drain mark of a node.

Every worker process (one per GPU) publishes its state every heartbeat under a key that expires
after a few missed beats, so a killed worker disappears by itself. ``ready`` is published only
after the model has loaded; ``/readyz``, ``/metrics`` and ``python -m worker.health`` read this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import redis

from jobs.store.keys import Keys
from jobs.store.replies import hash_mapping, texts


class WorkerState(StrEnum):
    STARTING = "starting"  # process up, model loading
    READY = "ready"  # model loaded, waiting for a job
    BUSY = "busy"  # running a job
    FAILED = "failed"  # model load failed; consumes nothing


@dataclass(frozen=True)
class WorkerInfo:
    id: str  # "<celery hostname>:<pid>"
    state: WorkerState
    hostname: str  # Celery node name, e.g. celery@gpu-node-1
    pid: int
    engine: str
    queue: str
    started_at: float
    heartbeat_at: float
    model_load_s: float | None = None  # seconds the model took to load
    job: str | None = None  # job being run (busy)
    error: str | None = None  # why loading failed (failed)

    def to_hash(self) -> dict[str, str]:
        return {k: ("" if v is None else str(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> WorkerInfo:
        return cls(
            id=raw["id"],
            state=WorkerState(raw["state"]),
            hostname=raw["hostname"],
            pid=int(raw["pid"]),
            engine=raw["engine"],
            queue=raw["queue"],
            started_at=float(raw["started_at"]),
            heartbeat_at=float(raw["heartbeat_at"]),
            model_load_s=float(raw["model_load_s"]) if raw.get("model_load_s") else None,
            job=raw.get("job") or None,
            error=raw.get("error") or None,
        )


class WorkerRegistry:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def publish(self, info: WorkerInfo, *, ttl_s: float) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.worker(info.id))
        pipe.hset(self.keys.worker(info.id), mapping=hash_mapping(info.to_hash()))
        pipe.pexpire(self.keys.worker(info.id), int(ttl_s * 1000))
        pipe.zadd(self.keys.workers(), {info.id: info.heartbeat_at})
        pipe.execute()

    def remove(self, worker_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.worker(worker_id))
        pipe.zrem(self.keys.workers(), worker_id)
        pipe.execute()

    def mark_draining(self, node: str, *, hand_back_at: float, ttl_s: int) -> None:
        """Worker ``node`` is shutting down: from ``hand_back_at`` on, the heartbeat of a run on it
        answers HAND_BACK (``JobStore.heartbeat``). The mark lasts ``ttl_s`` at most."""
        self.redis.set(self.keys.drain(node), repr(hand_back_at), ex=ttl_s)

    def clear_draining(self, node: str) -> None:
        """A worker starting under ``node``'s name is not the one that was shutting down."""
        self.redis.delete(self.keys.drain(node))

    def list(self) -> list[WorkerInfo]:
        """Live workers (their state key has not expired), pruning the index of dead ones."""
        ids = texts(self.redis.zrange(self.keys.workers(), 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(self.keys.worker(worker_id))
        live, dead = [], []
        for worker_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                live.append(WorkerInfo.from_hash(raw))
            else:
                dead.append(worker_id)
        if dead:
            self.redis.zrem(self.keys.workers(), *dead)
        return live

    def counts(self) -> dict[WorkerState, int]:
        counts = {state: 0 for state in WorkerState}
        for info in self.list():
            counts[info.state] += 1
        return counts
