"""Lua scripts of the job store: every status transition is one atomic script.

A transition reads the job's status, checks it may move, updates the hash, the indexes (tenant,
status, queue, deadlines, retention), the metric counters and the webhook outbox, all in one
step. So a cancel racing a finish, or two workers racing for a redelivered job, can interleave
only between scripts, never inside one, and each outcome is reported back to the caller.

Keys are built from ``ARGV[1]`` (the prefix) with the same layout as ``jobs/store/keys.py``; the store
targets one Redis primary (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

PRELUDE = r"""
local P = ARGV[1]
local function key(...) return P .. ':' .. table.concat({...}, ':') end
local TERMINAL = {succeeded = true, failed = true, canceled = true, expired = true}
local RUNNING = {starting = true, processing = true}

-- Move the job between status indexes (tenant status sets, engine queue and active set).
local function set_status(jk, id, old, new)
  local tenant, engine = unpack(redis.call('HMGET', jk, 'tenant', 'engine'))
  redis.call('HSET', jk, 'status', new)
  redis.call('ZREM', key('t', tenant, 's', old), id)
  redis.call('ZADD', key('t', tenant, 's', new), 0, id)
  if old == 'queued' then
    redis.call('ZREM', key('q', engine, 'waiting'), id)
    redis.call('ZREM', key('deadline', 'queue'), id)
  end
  if RUNNING[new] then
    redis.call('SADD', key('q', engine, 'active'), id)
  else
    redis.call('SREM', key('q', engine, 'active'), id)
  end
end

-- Record a webhook delivery for `event` if the job subscribed to it; returns its id or ''.
-- The id is the webhook-id header: stable across retries, unique per job and event.
local function emit(jk, id, event, now, suffix)
  local url, events, tenant = unpack(redis.call('HMGET', jk, 'webhook_url', 'webhook_events', 'tenant'))
  if not url or url == '' then return '' end
  if not events or not string.find(events, ',' .. event .. ',', 1, true) then return '' end
  local did = 'msg_' .. string.sub(id, 5) .. '_' .. event .. suffix
  local dk = key('wh', did)
  if redis.call('EXISTS', dk) == 1 then return '' end
  local best_effort = '0'
  if event == 'progress' then best_effort = '1' end
  redis.call('HSET', dk, 'id', did, 'job', id, 'tenant', tenant, 'event', event, 'url', url,
             'state', 'pending', 'attempts', 0, 'best_effort', best_effort, 'created_at', now)
  redis.call('ZADD', key('wh', 'due'), now, did)
  return did
end

-- True when `owner` holds the run's lease. A lease that ran out while its holder could not renew
-- it (Redis was down or restarting) is taken back, for `lease_ms`, if nobody claimed the job since:
-- the job's `worker` field still names the holder (a claim or a handover changes it). A
-- `lease_ms` of 0 takes nothing back.
local function hold(jk, owner, lease_ms)
  local holder = redis.call('GET', jk .. ':lease')
  if holder == owner then return true end
  if holder or tonumber(lease_ms) <= 0 then return false end
  local status, worker = unpack(redis.call('HMGET', jk, 'status', 'worker'))
  if worker ~= owner or not RUNNING[status] then return false end
  redis.call('SET', jk .. ':lease', owner, 'PX', lease_ms)
  redis.call('HDEL', jk, 'rescued_at', 'orphaned_at')
  return true
end

-- Move a job to a terminal status; returns the id of the `completed` delivery or ''.
local function finish(jk, id, new, now, err)
  local old = redis.call('HGET', jk, 'status')
  set_status(jk, id, old, new)
  redis.call('HSET', jk, 'completed_at', now)
  if err ~= '' then redis.call('HSET', jk, 'error', err) end
  redis.call('ZREM', key('deadline', 'queue'), id)
  redis.call('ZREM', key('deadline', 'run'), id)
  redis.call('ZREM', key('deadline', 'cancel'), id)
  redis.call('ZADD', key('retention'), now, id)
  redis.call('DEL', jk .. ':lease')
  redis.call('HINCRBY', key('m', 'c', 'jobs_completed'), 'status=' .. new, 1)
  redis.call('SADD', key('m', 'names'), 'c:jobs_completed')
  return emit(jk, id, 'completed', now, '')
end
"""

# ARGV: P, id, tenant, engine, now, expires_at, idem_digest, idem_ttl_s, max_queued, upload_ids_csv,
#       request_fingerprint, then the hash's field/value pairs.
# The idempotency key holds "{job id} {fingerprint}"; a reused key whose fingerprint differs is refused.
CREATE = (
    PRELUDE
    + r"""
local id, tenant, engine, expires_at = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local idem, idem_ttl, max_queued, uploads = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local fingerprint = ARGV[11]
if idem ~= '' then
  local existing = redis.call('GET', key('idem', tenant, idem))
  if existing then
    local existing_id, existing_fingerprint = string.match(existing, '^(%S+) ?(%S*)$')
    -- a key stored without a fingerprint (before fingerprints existed) cannot be compared: replay it
    if existing_fingerprint ~= '' and existing_fingerprint ~= fingerprint then return {'key_reused', existing_id} end
    return {'existing', existing_id}
  end
end
if redis.call('ZCARD', key('t', tenant, 's', 'queued')) >= max_queued then return {'too_many', ''} end
for u in string.gmatch(uploads, '[^,]+') do
  if not redis.call('ZSCORE', key('uploads'), tenant .. '/' .. u) then return {'upload_unavailable', u} end
end
for u in string.gmatch(uploads, '[^,]+') do redis.call('ZREM', key('uploads'), tenant .. '/' .. u) end
local jk = key('job', id)
redis.call('HSET', jk, unpack(ARGV, 12))
redis.call('ZADD', key('t', tenant, 'jobs'), 0, id)
redis.call('ZADD', key('t', tenant, 's', 'queued'), 0, id)
redis.call('ZADD', key('q', engine, 'waiting'), 0, id)
redis.call('ZADD', key('deadline', 'queue'), expires_at, id)
if idem ~= '' then
  redis.call('SET', key('idem', tenant, idem), id .. ' ' .. fingerprint, 'EX', idem_ttl)
  redis.call('HSET', jk, 'idem', idem)
end
redis.call('HINCRBY', key('m', 'c', 'jobs_created'), 'engine=' .. engine, 1)
redis.call('SADD', key('m', 'names'), 'c:jobs_created')
return {'created', id}
"""
)

# ARGV: P, id, owner, now, lease_ms, max_deliveries, run_deadline, poisoned_error, expired_error
CLAIM = (
    PRELUDE
    + r"""
local id, owner, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = key('job', id)
local status, deleted, expires_at, cancel =
  unpack(redis.call('HMGET', jk, 'status', 'deleted_at', 'expires_at', 'cancel_requested'))
if not status or deleted then return {'missing', ''} end
if TERMINAL[status] then return {'terminal', status} end
local lk = jk .. ':lease'
local holder = redis.call('GET', lk)
if holder and holder ~= owner then return {'leased', tostring(redis.call('PTTL', lk))} end
if status == 'queued' and now > tonumber(expires_at) then
  return {'expired', finish(jk, id, 'expired', now, ARGV[9])}
end
if cancel == '1' then return {'canceled', finish(jk, id, 'canceled', now, '')} end
local n = redis.call('HINCRBY', jk, 'deliveries', 1)
local handovers = tonumber(redis.call('HGET', jk, 'handovers') or '0')
if n - handovers > tonumber(ARGV[6]) then return {'poisoned', finish(jk, id, 'failed', now, ARGV[8])} end
redis.call('SET', lk, owner, 'PX', ARGV[5])
local did = ''
if status == 'queued' then
  redis.call('HSET', jk, 'started_at', now)
  did = emit(jk, id, 'start', now, '')
end
set_status(jk, id, status, 'starting')
redis.call('HSET', jk, 'worker', owner, 'run_started_at', now)
redis.call('HDEL', jk, 'progress', 'orphaned_at', 'rescued_at')
redis.call('ZADD', key('deadline', 'run'), ARGV[7], id)
return {'claimed', tostring(n), did}
"""
)

# ARGV: P, id, owner, lease_ms, now, worker node
#   ->  -1 lost, 0 running, 1 cancel requested, 2 hand the job back (the node is shutting down)
HEARTBEAT = (
    PRELUDE
    + r"""
local jk = key('job', ARGV[2])
if not hold(jk, ARGV[3], ARGV[4]) then return -1 end
redis.call('PEXPIRE', jk .. ':lease', ARGV[4])
if redis.call('HGET', jk, 'cancel_requested') == '1' then return 1 end
local drain_at = redis.call('GET', key('drain', ARGV[6]))
if drain_at and tonumber(ARGV[5]) >= tonumber(drain_at) then return 2 end
return 0
"""
)

# ARGV: P, id, owner, now, progress_json, webhook_interval_s, lease_ms
PROGRESS = (
    PRELUDE
    + r"""
local id, owner, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = key('job', id)
if not hold(jk, owner, ARGV[7]) then return {'lost', '0', ''} end
local status = redis.call('HGET', jk, 'status')
if not RUNNING[status] then return {'lost', '0', ''} end
if status == 'starting' then set_status(jk, id, 'starting', 'processing') end
redis.call('HSET', jk, 'progress', ARGV[5])
local did = ''
local last = tonumber(redis.call('HGET', jk, 'progress_webhook_at') or '0')
if now - last >= tonumber(ARGV[6]) then
  local seq = redis.call('HINCRBY', jk, 'progress_seq', 1)
  did = emit(jk, id, 'progress', now, '_' .. seq)
  if did ~= '' then
    redis.call('HSET', jk, 'progress_webhook_at', now)
    redis.call('EXPIRE', key('wh', did), 3600)
  end
end
return {'ok', redis.call('HGET', jk, 'cancel_requested') or '0', did}
"""
)

# ARGV: P, id, owner, now, status, error_json, output_key, report_key, report_json
COMPLETE = (
    PRELUDE
    + r"""
local id, owner, now, new = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local jk = key('job', id)
local status = redis.call('HGET', jk, 'status')
if not status then return {'missing', ''} end
if TERMINAL[status] then return {'already', status} end
if not hold(jk, owner, 60000) then return {'lost', status} end
if new == 'succeeded' then
  redis.call('HSET', jk, 'output_key', ARGV[7], 'report_key', ARGV[8], 'report', ARGV[9])
end
return {'done', finish(jk, id, new, now, ARGV[6])}
"""
)

# ARGV: P, id, tenant, now, cancel_grace_s
CANCEL = (
    PRELUDE
    + r"""
local id, tenant, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = key('job', id)
local status, owner, deleted = unpack(redis.call('HMGET', jk, 'status', 'tenant', 'deleted_at'))
if not status or owner ~= tenant then return {'missing', ''} end
if deleted then return {'gone', ''} end
if TERMINAL[status] then return {'terminal', ''} end
if status == 'queued' then return {'canceled', finish(jk, id, 'canceled', now, '')} end
if redis.call('HGET', jk, 'cancel_requested') ~= '1' then
  redis.call('HSET', jk, 'cancel_requested', '1', 'cancel_requested_at', now)
  redis.call('ZADD', key('deadline', 'cancel'), now + tonumber(ARGV[5]), id)
end
return {'requested', ''}
"""
)

# Sweeper: end a job that is still `expected` ("queued" or "running").
# ARGV: P, id, now, expected, new_status, error_json
FORCE = (
    PRELUDE
    + r"""
local id, now, expected, new = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local jk = key('job', id)
local status = redis.call('HGET', jk, 'status')
local ok = (expected == 'queued' and status == 'queued') or (expected == 'running' and RUNNING[status])
if not ok then
  redis.call('ZREM', key('deadline', 'queue'), id)
  redis.call('ZREM', key('deadline', 'run'), id)
  redis.call('ZREM', key('deadline', 'cancel'), id)
  return {'skipped', status or ''}
end
return {'done', finish(jk, id, new, now, ARGV[6])}
"""
)

# Sweeper: a running job without a lease lost its worker (killed, or its node went away). Mark it
# and let the caller send a new message at once, instead of waiting for the broker to restore the
# dead worker's unacknowledged one after the visibility timeout. The mark keeps later sweeps from
# sending more; the next claim clears it. If no claim comes within `redelivery_grace_s`, the run
# deadline fails the job as worker_lost.
# ARGV: P, id, now, redelivery_grace_s  ->  {outcome, engine}
RESCUE = (
    PRELUDE
    + r"""
local id, now = ARGV[2], tonumber(ARGV[3])
local jk = key('job', id)
local status, rescued, engine = unpack(redis.call('HMGET', jk, 'status', 'rescued_at', 'engine'))
if not RUNNING[status] then return {'skipped', ''} end
if redis.call('EXISTS', jk .. ':lease') == 1 then return {'alive', ''} end
if rescued then return {'pending', ''} end
redis.call('HSET', jk, 'rescued_at', now, 'orphaned_at', now)
redis.call('ZADD', key('deadline', 'run'), now + tonumber(ARGV[4]), id)
return {'rescue', engine}
"""
)

# Worker, shutting down: give a running job back. The lease is dropped and the worker field
# cleared (the old run can no longer take the lease back); the handover does not count towards
# the redelivery cap. The caller sends a new message; the job stays running until it is claimed.
# ARGV: P, id, owner, now, redelivery_grace_s  ->  {outcome, engine}
RELEASE = (
    PRELUDE
    + r"""
local id, owner, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = key('job', id)
local status, engine = unpack(redis.call('HMGET', jk, 'status', 'engine'))
if not RUNNING[status] or redis.call('GET', jk .. ':lease') ~= owner then return {'lost', ''} end
redis.call('DEL', jk .. ':lease')
redis.call('HINCRBY', jk, 'handovers', 1)
redis.call('HSET', jk, 'worker', '', 'rescued_at', now, 'orphaned_at', now)
redis.call('HDEL', jk, 'progress')
redis.call('ZADD', key('deadline', 'run'), now + tonumber(ARGV[5]), id)
return {'released', engine}
"""
)

# Worker's main process, when the hard time limit killed the process running a job: fail the job,
# if it is still running a run of this worker node (`worker` starts with the node prefix).
# ARGV: P, id, now, node_prefix, error_json
TIME_LIMIT = (
    PRELUDE
    + r"""
local id, now, prefix = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local jk = key('job', id)
local status, worker = unpack(redis.call('HMGET', jk, 'status', 'worker'))
if not RUNNING[status] or string.sub(worker or '', 1, #prefix) ~= prefix then return {'skipped', ''} end
return {'done', finish(jk, id, 'failed', now, ARGV[5])}
"""
)

# Sweeper, at a run's deadline. A live lease means the run is over its time limit: fail it. No
# lease means its worker died and the broker will redeliver the message: wait `redelivery_grace_s`
# once (a new claim clears the mark and sets a new deadline); still orphaned then, it failed.
# ARGV: P, id, now, redelivery_grace_s, time_limit_error, worker_lost_error
RUN_DEADLINE = (
    PRELUDE
    + r"""
local id, now = ARGV[2], tonumber(ARGV[3])
local jk = key('job', id)
local status = redis.call('HGET', jk, 'status')
if not RUNNING[status] then
  redis.call('ZREM', key('deadline', 'run'), id)
  return {'skipped', ''}
end
if redis.call('EXISTS', jk .. ':lease') == 1 then
  return {'timed_out', finish(jk, id, 'failed', now, ARGV[5])}
end
if not redis.call('HGET', jk, 'orphaned_at') then
  redis.call('HSET', jk, 'orphaned_at', now)
  redis.call('ZADD', key('deadline', 'run'), now + tonumber(ARGV[4]), id)
  return {'waiting', ''}
end
return {'lost', finish(jk, id, 'failed', now, ARGV[6])}
"""
)

# ARGV: P, id, tenant, now, tombstone_ttl_s
TOMBSTONE = (
    PRELUDE
    + r"""
local id, tenant, now = ARGV[2], ARGV[3], ARGV[4]
local jk = key('job', id)
local status, owner, deleted, idem = unpack(redis.call('HMGET', jk, 'status', 'tenant', 'deleted_at', 'idem'))
if not status or owner ~= tenant then return {'missing', ''} end
if deleted then return {'gone', ''} end
if not TERMINAL[status] then return {'conflict', status} end
if idem then redis.call('DEL', key('idem', tenant, idem)) end
redis.call('ZREM', key('t', tenant, 'jobs'), id)
redis.call('ZREM', key('t', tenant, 's', status), id)
redis.call('ZREM', key('retention'), id)
redis.call('DEL', jk)
redis.call('HSET', jk, 'id', id, 'tenant', tenant, 'status', status, 'deleted_at', now, 'data_removed', '1')
redis.call('EXPIRE', jk, ARGV[5])
return {'deleted', status}
"""
)
