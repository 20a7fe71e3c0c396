"""Per-API-key rate limit: a token bucket in Redis, taken from atomically by one Lua script.

Each key has a bucket of ``burst`` tokens that refills at ``rate_per_s``; a request takes one.
The script reads the bucket, refills it for the time elapsed, takes the cost if it is there and
writes it back in one step, so concurrent API processes can never spend the same token twice.
Time is Redis's own clock (``TIME``), so API hosts with skewed clocks agree. An empty bucket
answers how long until the cost is available again: the API returns it as ``Retry-After``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from jobs.errors import ServiceError
from jobs.store.keys import Keys

# KEYS[1] bucket hash; ARGV: rate (tokens/s), burst, cost, now (seconds; "" = Redis TIME)
# Returns {allowed (0/1), tokens left, seconds until the cost is available} (numbers as strings).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate) * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait)}
"""


class RateLimited(ServiceError):
    """The API key spent its request budget; ``retry_after_s`` says when one request fits again."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up (``Retry-After`` takes no fractions), at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tokens_left: float  # tokens in the bucket after this request
    retry_after_s: float  # 0 when allowed; else seconds until the cost is available


class TokenBucket:
    """Token buckets, one per identity (an API key id), in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.keys = Keys(prefix)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._take = client.register_script(_TAKE)

    def take(self, identity: str, *, cost: float = 1.0, now: float | None = None) -> Decision:
        """Take ``cost`` tokens from ``identity``'s bucket if they are there."""
        allowed, left, wait = self._take(
            keys=[self.keys.rate_limit(identity)],
            args=[repr(self.rate_per_s), str(self.burst), repr(cost), "" if now is None else repr(now)],
        )
        return Decision(allowed=int(allowed) == 1, tokens_left=float(left), retry_after_s=float(wait))

    def enforce(self, identity: str, *, cost: float = 1.0) -> Decision:
        """Take a token or raise :class:`RateLimited`."""
        decision = self.take(identity, cost=cost)
        if not decision.allowed:
            raise RateLimited(
                f"rate limit of {self.rate_per_s:g} requests/s (burst {self.burst}) exceeded for this API key",
                retry_after_s=decision.retry_after_s,
            )
        return decision
