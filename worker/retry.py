"""Retrying a call to a dependency that may be briefly unreachable (Redis restarting, S3 down).

One policy shape for every such retry in the worker: exponential backoff from ``base_s``,
capped at ``max_s``, given up once the next attempt would start later than ``horizon_s`` after
the first one. The last error is re-raised, so the caller maps it to a stable job error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base_s: float  # delay after the first failed attempt; doubles after each further one
    max_s: float  # longest delay between two attempts
    horizon_s: float  # no attempt starts later than this after the first one

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        return min(self.base_s * 2 ** max(failures - 1, 0), self.max_s)


def retry(
    operation: Callable[[], T],
    *,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``operation`` until it succeeds; re-raise its error past the horizon or once ``stop()``."""
    started = clock()
    failures = 0
    while True:
        try:
            return operation()
        except retry_on as exc:
            failures += 1
            delay = backoff.delay(failures)
            if stop() or clock() + delay - started > backoff.horizon_s:
                log.error("%s failed %d times; giving up: %s", what, failures, exc)
                raise
            log.warning("%s failed (attempt %d): %s; retrying in %.2f s", what, failures, exc, delay)
            sleep(delay)
