"""The stages of a job as it runs them: the wall time spent in each, and the overall progress made."""

from __future__ import annotations

import time
from collections import defaultdict

from ipfvr_core.progress import ProgressCallback, ProgressEvent

# Share of overall progress given to each stage (the engine dominates the restore stage).
_STAGE_SPAN = {"references": (0.0, 0.02), "analyze": (0.02, 0.2), "restore": (0.2, 1.0)}


class Stages:
    """Wall time per stage (``seconds``, for the report) and progress events for the caller's callback."""

    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._progress = progress

    def add(self, stage: str, since: float) -> float:
        """Count the time from ``since`` (a ``time.perf_counter()``) to now in ``stage``; returns now."""
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def report(self, stage: str, current: int, total: int) -> None:
        """Tell the callback that ``current`` of ``total`` units of ``stage`` are done."""
        if self._progress is None:
            return
        lo, hi = _STAGE_SPAN[stage]
        fraction = lo + (hi - lo) * (current / total if total else 1.0)
        self._progress(ProgressEvent(stage=stage, current=current, total=total, fraction=round(fraction, 4)))
