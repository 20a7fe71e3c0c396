"""The Redis key layout of the job store, in one place.

Every key starts with the configured prefix. The Lua scripts in ``jobs/store/lua.py`` build the same
names with their ``key(...)`` helper (parts joined by ``:``); this class is the Python side.

=====================================  ======  ==================================================
key                                    type    holds
=====================================  ======  ==================================================
P:job:{id}                             hash    the job (or its tombstone)
P:job:{id}:lease                       string  owner of the running attempt, with a TTL
P:t:{tenant}:jobs                      zset    the tenant's jobs, all score 0 (lex = time order)
P:t:{tenant}:s:{status}                zset    the tenant's jobs in one status
P:q:{engine}:waiting                   zset    queued jobs of an engine (rank = queue position)
P:q:{engine}:active                    set     running jobs of an engine
P:deadline:{queue|run|cancel}          zset    job ids scored by the time the sweeper acts
P:retention                            zset    terminal jobs scored by completion time
P:idem:{tenant}:{sha256(key)}          string  Idempotency-Key -> "{job id} {request fingerprint}", TTL
P:uploads                              zset    "{tenant}/{upload id}" of unused uploads, by time (uploads.py)
P:wh:{delivery id}                     hash    one webhook delivery (stable webhook-id)
P:wh:due                               zset    pending deliveries scored by next attempt time
P:idt:{id}                             hash    an identity (jobs/store/identities.py)
P:t:{tenant}:idts                      zset    the tenant's identities, all score 0 (lex = time order)
P:tenant:{tenant}                      hash    tenant: webhook secrets
P:apikey:{hmac}                        hash    API key (hashed) -> tenant
P:rl:{key id}                          hash    API key's rate-limit token bucket (tokens, time)
P:worker:{worker id}                   hash    worker state and heartbeat, with a TTL
P:drain:{worker node}                  string  when a shutting-down node's jobs are handed back
P:s3:abandoned                         zset    S3 uploads/objects to clean up, by due time (leftovers.py)
P:lock:{name}                          string  a lock (the sweep's), with a TTL
P:m:c:{name} / P:m:h:{name}            hash    metric counters / histogram buckets
=====================================  ======  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def job(self, job_id: str) -> str:
        return self._k("job", job_id)

    def lease(self, job_id: str) -> str:
        return self._k("job", job_id, "lease")

    def tenant_jobs(self, tenant: str) -> str:
        return self._k("t", tenant, "jobs")

    def identity(self, identity_id: str) -> str:
        return self._k("idt", identity_id)

    def tenant_identities(self, tenant: str) -> str:
        return self._k("t", tenant, "idts")

    def tenant_status(self, tenant: str, status: str) -> str:
        return self._k("t", tenant, "s", status)

    def waiting(self, engine: str) -> str:
        return self._k("q", engine, "waiting")

    def active(self, engine: str) -> str:
        return self._k("q", engine, "active")

    def deadline(self, kind: str) -> str:
        return self._k("deadline", kind)

    def idempotency(self, tenant: str, digest: str) -> str:
        return self._k("idem", tenant, digest)

    def retention(self) -> str:
        return self._k("retention")

    def uploads(self) -> str:
        return self._k("uploads")

    def delivery(self, delivery_id: str) -> str:
        return self._k("wh", delivery_id)

    def deliveries_due(self) -> str:
        return self._k("wh", "due")

    def dispatched(self, delivery_id: str) -> str:
        return self._k("wh", delivery_id, "dispatched")

    def tenant(self, tenant: str) -> str:
        return self._k("tenant", tenant)

    def tenants(self) -> str:
        return self._k("tenants")

    def api_key(self, digest: str) -> str:
        return self._k("apikey", digest)

    def worker(self, worker_id: str) -> str:
        return self._k("worker", worker_id)

    def workers(self) -> str:
        return self._k("workers")

    def counter(self, name: str) -> str:
        return self._k("m", "c", name)

    def histogram(self, name: str) -> str:
        return self._k("m", "h", name)

    def metric_names(self) -> str:
        return self._k("m", "names")

    def lock(self, name: str) -> str:
        return self._k("lock", name)

    def drain(self, node: str) -> str:
        return self._k("drain", node)

    def abandoned_uploads(self) -> str:
        return self._k("s3", "abandoned")

    def rate_limit(self, key_id: str) -> str:
        return self._k("rl", key_id)
