"""Identities: a tenant's registered people, each with photos and the engine's per-identity module.

An identity is created ``queued`` with its photos in S3, trained by a worker of its engine
(``training``; for the ipfvr engine the LoRA psi_id, for engines without per-identity modules a
check of the photos), and ends ``ready`` or ``failed``. A job names it with the option
``identity``: its photos join the job's references and its module, if any, conditions the engine.

One Redis hash per identity (``P:idt:{id}``) and one index per tenant (``P:t:{tenant}:idts``, ids
with score 0, so lexical order is creation order). Transitions are Lua scripts: a worker moves an
identity only from the state it expects, so a delete or a second delivery never resurrects one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum

import redis

from jobs.errors import NotFound
from jobs.ids import new_id
from jobs.model import ErrorInfo
from jobs.store.keys import Keys
from jobs.store.replies import hash_mapping


class IdentityStatus(StrEnum):
    QUEUED = "queued"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


def new_identity_id() -> str:
    return new_id("idt")


@dataclass(frozen=True)
class IdentityRecord:
    id: str
    tenant: str
    name: str  # the client's label
    engine: str  # the engine whose module is trained
    status: IdentityStatus
    photos: list[str]  # object keys of the photos
    photo_names: list[str]  # the client's file names (display only)
    created_at: float
    completed_at: float | None = None
    attempts: int = 0  # trainings started (redeliveries included)
    module_key: str | None = None  # object key of the per-identity module (None: the engine has none)
    summary: dict[str, object] = field(default_factory=dict)  # what training reported (photos, losses)
    error: ErrorInfo | None = None

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "engine": self.engine,
            "status": self.status.value,
            "photos": json.dumps(self.photos),
            "photo_names": json.dumps(self.photo_names),
            "created_at": repr(self.created_at),
            "attempts": str(self.attempts),
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> IdentityRecord:
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            name=raw["name"],
            engine=raw["engine"],
            status=IdentityStatus(raw["status"]),
            photos=json.loads(raw["photos"]),
            photo_names=json.loads(raw["photo_names"]),
            created_at=float(raw["created_at"]),
            completed_at=float(raw["completed_at"]) if raw.get("completed_at") else None,
            attempts=int(raw.get("attempts") or 0),
            module_key=raw.get("module_key") or None,
            summary=json.loads(raw["summary"]) if raw.get("summary") else {},
            error=ErrorInfo.from_json(raw["error"]) if raw.get("error") else None,
        )


# KEYS[1] = identity hash. ARGV: max attempts. Returns "started", "attempts" (gave up: failed), or the
# status that forbids a start ("missing", "ready", "failed").
_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'training' then return status end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'completed_at', ARGV[2], 'error', ARGV[3])
  return 'attempts'
end
redis.call('HSET', KEYS[1], 'status', 'training')
return 'started'
"""

# KEYS[1] = identity hash. ARGV: status, completed_at, module_key, summary JSON, error JSON, expected status.
# Returns 1 if the identity was finished, 0 if it is gone or no longer in the expected status.
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'completed_at', ARGV[2], 'module_key', ARGV[3],
           'summary', ARGV[4], 'error', ARGV[5])
return 1
"""


class IdentityStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)

    def create(self, record: IdentityRecord) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.identity(record.id), mapping=hash_mapping(record.to_hash()))
        pipe.zadd(self.keys.tenant_identities(record.tenant), {record.id: 0})
        pipe.execute()

    def count(self, tenant: str) -> int:
        return int(self.redis.zcard(self.keys.tenant_identities(tenant)))

    def get(self, identity_id: str) -> IdentityRecord | None:
        raw = self.redis.hgetall(self.keys.identity(identity_id))
        return IdentityRecord.from_hash(_decoded(raw)) if raw else None

    def get_for(self, tenant: str, identity_id: str) -> IdentityRecord:
        """The tenant's identity; another tenant's is not found either."""
        record = self.get(identity_id)
        if record is None or record.tenant != tenant:
            raise NotFound(f"no identity {identity_id!r}", field="id", code="identity_not_found")
        return record

    def list(self, tenant: str, *, limit: int) -> list[IdentityRecord]:
        """The tenant's identities, newest first."""
        ids = self.redis.zrevrangebylex(self.keys.tenant_identities(tenant), "+", "-", start=0, num=limit)
        pipe = self.redis.pipeline(transaction=False)
        for identity_id in ids:
            pipe.hgetall(self.keys.identity(_decoded_text(identity_id)))
        return [IdentityRecord.from_hash(_decoded(raw)) for raw in pipe.execute() if raw]

    def delete(self, record: IdentityRecord) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.identity(record.id))
        pipe.zrem(self.keys.tenant_identities(record.tenant), record.id)
        pipe.execute()

    def start(self, identity_id: str, *, max_attempts: int) -> str:
        """Move a queued (or redelivered, training) identity to training; see ``_START`` for the answers."""
        error = ErrorInfo(code="poisoned", message=f"training was started {max_attempts} times without finishing")
        return _decoded_text(
            self._start(keys=[self.keys.identity(identity_id)], args=[max_attempts, repr(time.time()), error.to_json()])
        )

    def finish(
        self,
        identity_id: str,
        *,
        status: IdentityStatus,
        module_key: str | None = None,
        summary: dict[str, object] | None = None,
        error: ErrorInfo | None = None,
        expected: IdentityStatus = IdentityStatus.TRAINING,
    ) -> bool:
        """End an identity (training, or ``expected``) as ready or failed; False when it was deleted (or
        moved on) meanwhile."""
        done = self._finish(
            keys=[self.keys.identity(identity_id)],
            args=[
                status.value,
                repr(time.time()),
                module_key or "",
                json.dumps(summary or {}),
                error.to_json() if error else "",
                expected.value,
            ],
        )
        return bool(int(done))


def _decoded_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decoded(raw: dict) -> dict[str, str]:
    return {_decoded_text(k): _decoded_text(v) for k, v in raw.items()}
