"""When a failed webhook attempt is retried: exponential backoff for terminal events, none for progress.

A start or completed event is retried until it is delivered, answered 410 Gone or refused as a
forbidden target, or until it runs out of attempts (``max_attempts``) or of time (no attempt
later than ``horizon_s`` after the event), whichever comes first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # attempts of a terminal/start event before it is abandoned
    base_s: float  # delay after the first failed attempt
    max_s: float  # longest delay
    horizon_s: float = math.inf  # no attempt later than this after the event was recorded

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: base * 2^(attempts-1), capped."""
        return min(self.base_s * 2 ** max(attempts - 1, 0), self.max_s)

    def next_attempt(
        self, *, attempts: int, best_effort: bool, permanent: bool, now: float, recorded_at: float | None = None
    ) -> float | None:
        """When to try again, or None to give up. ``recorded_at``: when the event happened."""
        if best_effort or permanent or attempts >= self.max_attempts:
            return None
        at = now + self.delay(attempts)
        if recorded_at is not None and at > recorded_at + self.horizon_s:
            return None
        return at
