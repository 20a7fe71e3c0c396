"""The job store's sweeps: deadlines, rescue of jobs whose worker died, retention and the sweep lock.

The maintenance sweep (``worker/sweeper.py``) and a worker's shutdown and time limit use these; the
API never does. A mixin of :class:`jobs.store.jobs.JobStore`, which registers the scripts.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import redis
from redis.commands.core import Script
from redis.exceptions import LockNotOwnedError

from jobs.model import ErrorInfo
from jobs.store.keys import Keys
from jobs.store.replies import decoded as _decode
from jobs.store.replies import now_or as _now
from jobs.store.replies import text_set, texts
from jobs.store.results import Transition

log = logging.getLogger(__name__)


class SweepQueries:
    """What the sweep asks of and does to the jobs; see the module docstring."""

    redis: redis.Redis
    keys: Keys
    _prefix: str
    _run_deadline: Script
    _rescue: Script
    _release: Script
    _time_limit: Script

    def run_deadline(
        self, job_id: str, *, redelivery_grace_s: float, time_limit_s: int, now: float | None = None
    ) -> Transition:
        """A run passed its deadline. Outcomes: timed_out (its worker is alive: failed), waiting (its
        worker died: wait for the redelivery once), lost (no redelivery came: failed), skipped."""
        timed_out = ErrorInfo(code="time_limit_exceeded", message=f"the job ran longer than {time_limit_s} s")
        lost = ErrorInfo(code="worker_lost", message="the job's worker stopped and the job was not redelivered")
        outcome, detail = self._run_deadline(
            args=[
                self._prefix,
                job_id,
                _now(now),
                redelivery_grace_s,
                timed_out.to_json(),
                lost.to_json(),
            ]
        )
        outcome, detail = _decode(outcome), _decode(detail)
        return Transition(outcome=outcome, delivery=detail or None)

    def rescue(self, job_id: str, *, redelivery_grace_s: float, now: float | None = None) -> str | None:
        """A running job whose lease ran out lost its worker: the engine to send it to again, or None
        (it is alive, already being redelivered, or no longer running)."""
        outcome, engine = self._rescue(args=[self._prefix, job_id, _now(now), redelivery_grace_s])
        return _decode(engine) if _decode(outcome) == "rescue" else None

    def unmark_rescue(self, job_id: str) -> None:
        """The rescue message could not be sent: let the next sweep try again."""
        self.redis.hdel(self.keys.job(job_id), "rescued_at", "orphaned_at")

    def release(self, job_id: str, *, owner: str, redelivery_grace_s: float, now: float | None = None) -> str | None:
        """Give back the run ``owner`` holds (worker shutdown): the engine to send it to, or None if
        the run was no longer this owner's."""
        outcome, engine = self._release(args=[self._prefix, job_id, owner, _now(now), redelivery_grace_s])
        return _decode(engine) if _decode(outcome) == "released" else None

    def fail_time_limit(self, job_id: str, *, node: str, time_limit_s: int, now: float | None = None) -> Transition:
        """The hard time limit killed the process running ``job_id`` on ``node``: fail the job, if the
        run is still that node's. Outcomes: done, skipped."""
        error = ErrorInfo(code="time_limit_exceeded", message=f"the job ran longer than {time_limit_s} s")
        outcome, detail = self._time_limit(args=[self._prefix, job_id, _now(now), f"{node}:", error.to_json()])
        outcome, detail = _decode(outcome), _decode(detail)
        return Transition(outcome=outcome, delivery=detail or None if outcome == "done" else None)

    def active(self, engine: str) -> builtins.list[str]:
        """Ids of the running jobs of ``engine``."""
        return sorted(text_set(self.redis.smembers(self.keys.active(engine))))

    def due(
        self, kind: Literal["queue", "run", "cancel"], *, now: float | None = None, limit: int = 100
    ) -> builtins.list[str]:
        """Job ids whose ``kind`` deadline has passed."""
        return texts(self.redis.zrangebyscore(self.keys.deadline(kind), "-inf", _now(now), start=0, num=limit))

    def retention_due(self, *, older_than: float, limit: int = 100) -> builtins.list[str]:
        """Terminal jobs that ended before ``older_than`` and still hold data."""
        return texts(self.redis.zrangebyscore(self.keys.retention(), "-inf", older_than, start=0, num=limit))

    def mark_data_removed(self, job_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job_id), "data_removed", "1")
        pipe.hdel(self.keys.job(job_id), "output_key", "report_key")
        pipe.zrem(self.keys.retention(), job_id)
        pipe.execute()

    @contextmanager
    def exclusive(self, name: str, *, ttl_s: float) -> Iterator[bool]:
        """Hold the lock ``name`` while the block runs, for ``ttl_s`` at most; yields False (the
        block must then do nothing) while another holder has it. A holder that outlived ``ttl_s``
        leaves alone the lock someone else has taken since."""
        lock = self.redis.lock(self.keys.lock(name), timeout=ttl_s, blocking=False)
        if not lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except LockNotOwnedError:
                log.warning("the %s lock ran out before its holder finished (after %g s)", name, ttl_s)
