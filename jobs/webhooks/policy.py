"""When a failed webhook attempt is retried: exponential backoff for terminal events, none for progress."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # attempts of a terminal/start event before it is abandoned
    base_s: float  # delay after the first failed attempt
    max_s: float  # longest delay

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: base * 2^(attempts-1), capped."""
        return min(self.base_s * 2 ** max(attempts - 1, 0), self.max_s)

    def next_attempt(self, *, attempts: int, best_effort: bool, permanent: bool, now: float) -> float | None:
        """When to try again, or None to give up."""
        if best_effort or permanent or attempts >= self.max_attempts:
            return None
        return now + self.delay(attempts)
