"""The webhook outbox in Redis: one record per delivery, and a due-time index for retries.

Job transitions write the record atomically with the status change (see ``jobs/lua.py``), so an
event is never lost between "the job finished" and "a delivery task was queued". An attempt
claims the record by moving its due time into the future (the in-flight window): a duplicate
task, or a dispatcher that sees it again, finds it not due and does nothing; a worker that dies
mid-attempt leaves it due again when the window ends. Retries are scheduled by due time here, not
with Celery ETA/countdown messages, so no retry sits unacknowledged in a worker for hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

from jobs.keys import Keys

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


class Outbox:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM)

    def claim(self, delivery_id: str, *, in_flight_s: float, now: float | None = None) -> Delivery | None:
        """Take the next attempt of ``delivery_id`` if it is pending and due."""
        raw = self._claim(args=[self._prefix, delivery_id, time.time() if now is None else now, in_flight_s])
        if not raw:
            return None
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        return Delivery(
            id=fields["id"], job_id=fields["job"], tenant=fields["tenant"], event=fields["event"],
            url=fields["url"], attempts=int(fields["attempts"]), best_effort=fields.get("best_effort") == "1",
        )

    def record(
        self, delivery_id: str, outcome: Outcome, *, detail: str, next_attempt_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """Store an attempt's outcome: delivered, retry at ``next_attempt_at``, or failed for good."""
        moment = time.time() if now is None else now
        dk = self.keys.delivery(delivery_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(dk, mapping={"last_attempt_at": repr(moment), "last_result": detail[:500]})
        if outcome == "retry":
            if next_attempt_at is None:
                raise ValueError("a retry needs next_attempt_at")
            pipe.zadd(self.keys.deliveries_due(), {delivery_id: next_attempt_at})
        else:
            pipe.hset(dk, "state", outcome)
            pipe.zrem(self.keys.deliveries_due(), delivery_id)
            pipe.expire(dk, _RECORD_TTL_S)
        pipe.hincrby(self.keys.counter("webhook_deliveries"), f"outcome={outcome}", 1)
        pipe.sadd(self.keys.metric_names(), "c:webhook_deliveries")
        pipe.execute()

    def due(self, *, now: float | None = None, limit: int = 200) -> list[str]:
        """Deliveries whose next attempt is due (new, retrying, or abandoned mid-attempt)."""
        moment = time.time() if now is None else now
        return list(self.redis.zrangebyscore(self.keys.deliveries_due(), "-inf", moment, start=0, num=limit))

    def mark_dispatched(self, delivery_id: str, *, ttl_s: float) -> bool:
        """True if no other dispatch of this delivery is in the queue (the marker lives ``ttl_s``)."""
        return bool(self.redis.set(self.keys.dispatched(delivery_id), "1", nx=True, px=int(ttl_s * 1000)))

    def state(self, delivery_id: str) -> dict[str, str]:
        return self.redis.hgetall(self.keys.delivery(delivery_id))
