"""The webhook outbox in Redis: one record per delivery, and a due-time index for retries.

Job transitions write the record atomically with the status change (see ``jobs/store/lua.py``), so an
event is never lost between "the job finished" and "a delivery task was queued". An attempt
claims the record by moving its due time into the future (the in-flight window): a duplicate
task, or a dispatcher that sees it again, finds it not due and does nothing; a worker that dies
mid-attempt leaves it due again when the window ends. Retries are scheduled by due time here, not
with Celery ETA/countdown messages, so no retry sits unacknowledged in a worker for hours.

Each outcome of a start or completed event is also written on the job (its ``webhook`` field:
event, state, attempts, last error, next attempt), so a client sees why its webhook is late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

from jobs.store.keys import Keys
from jobs.store.replies import text_hash, texts

_RECORD_TTL_S = 7 * 24 * 3600  # finished delivery records are kept this long for inspection

# ARGV: P, delivery id, now, in_flight_s  ->  the record's fields, or {} when not due / not pending
_CLAIM = r"""
local dk = ARGV[1] .. ':wh:' .. ARGV[2]
local due = ARGV[1] .. ':wh:due'
local now = tonumber(ARGV[3])
if redis.call('HGET', dk, 'state') ~= 'pending' then
  redis.call('ZREM', due, ARGV[2])
  return {}
end
local score = redis.call('ZSCORE', due, ARGV[2])
if not score or tonumber(score) > now then return {} end
redis.call('ZADD', due, now + tonumber(ARGV[4]), ARGV[2])
redis.call('HINCRBY', dk, 'attempts', 1)
redis.call('DEL', dk .. ':dispatched')
return redis.call('HGETALL', dk)
"""

# ARGV: P, delivery id, outcome, detail, next_attempt_at ('' unless retry), now, record_ttl_s
_RECORD = r"""
local P, id, outcome, detail, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[6])
local dk = P .. ':wh:' .. id
local due = P .. ':wh:due'
redis.call('HSET', dk, 'last_attempt_at', ARGV[6], 'last_result', detail)
local next_at = cjson.null
if outcome == 'retry' then
  next_at = tonumber(ARGV[5])
  redis.call('ZADD', due, next_at, id)
else
  redis.call('HSET', dk, 'state', outcome)
  redis.call('ZREM', due, id)
  redis.call('EXPIRE', dk, ARGV[7])
end
redis.call('HINCRBY', P .. ':m:c:webhook_deliveries', 'outcome=' .. outcome, 1)
redis.call('SADD', P .. ':m:names', 'c:webhook_deliveries')
local job, event, attempts, best_effort = unpack(redis.call('HMGET', dk, 'job', 'event', 'attempts', 'best_effort'))
if not job or best_effort == '1' then return 0 end
local jk = P .. ':job:' .. job
if redis.call('EXISTS', jk) == 0 or redis.call('HEXISTS', jk, 'deleted_at') == 1 then return 0 end
local last_error = detail
if outcome == 'delivered' then
  last_error = cjson.null
  local previous = redis.call('HGET', jk, 'webhook')
  if previous then
    local p = cjson.decode(previous)
    if p.event == event then last_error = p.last_error end
  end
end
local states = {retry = 'retrying', delivered = 'delivered', failed = 'failed'}
redis.call('HSET', jk, 'webhook', cjson.encode({
  event = event, state = states[outcome], attempts = tonumber(attempts), last_error = last_error,
  last_attempt_at = now, next_attempt_at = next_at,
}))
return 1
"""

Outcome = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class Delivery:
    id: str  # webhook-id
    job_id: str
    tenant: str
    event: str
    url: str
    attempts: int  # including the one just claimed
    best_effort: bool  # progress events: one attempt only
    created_at: float  # when the event was recorded (the retry horizon counts from here)


class Outbox:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)

    def claim(self, delivery_id: str, *, in_flight_s: float, now: float | None = None) -> Delivery | None:
        """Take the next attempt of ``delivery_id`` if it is pending and due."""
        raw = self._claim(args=[self._prefix, delivery_id, time.time() if now is None else now, in_flight_s])
        if not raw:
            return None
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        return Delivery(
            id=fields["id"],
            job_id=fields["job"],
            tenant=fields["tenant"],
            event=fields["event"],
            url=fields["url"],
            attempts=int(fields["attempts"]),
            best_effort=fields.get("best_effort") == "1",
            created_at=float(fields.get("created_at") or 0.0),
        )

    def record(
        self,
        delivery_id: str,
        outcome: Outcome,
        *,
        detail: str,
        next_attempt_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """Store an attempt's outcome (delivered, retry at ``next_attempt_at``, or failed for good) in
        the delivery record, and, for start and completed events, on the job."""
        moment = time.time() if now is None else now
        if outcome == "retry" and next_attempt_at is None:
            raise ValueError("a retry needs next_attempt_at")
        next_at = repr(next_attempt_at) if outcome == "retry" else ""
        self._record(args=[self._prefix, delivery_id, outcome, detail[:500], next_at, repr(moment), _RECORD_TTL_S])

    def due(self, *, now: float | None = None, limit: int = 200) -> list[str]:
        """Deliveries whose next attempt is due (new, retrying, or abandoned mid-attempt)."""
        moment = time.time() if now is None else now
        return texts(self.redis.zrangebyscore(self.keys.deliveries_due(), "-inf", moment, start=0, num=limit))

    def mark_dispatched(self, delivery_id: str, *, ttl_s: float) -> bool:
        """True if no other dispatch of this delivery is in the queue (the marker lives ``ttl_s``)."""
        return bool(self.redis.set(self.keys.dispatched(delivery_id), "1", nx=True, px=int(ttl_s * 1000)))

    def state(self, delivery_id: str) -> dict[str, str]:
        return text_hash(self.redis.hgetall(self.keys.delivery(delivery_id)))
