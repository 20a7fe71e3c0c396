"""Progress of a job: one event type, from the library's stages to the service's job object.

The library reports its stages (``references``, ``analyze``, ``restore``); the service adds its own
around them (``download``, ``upload``) with the same type, stores the latest event and shows it as
``ProgressPublic``. Standard library only: the API process reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LIBRARY_STAGES = ("references", "analyze", "restore")  # in order, as Restorer.restore reports them


@dataclass(frozen=True)
class ProgressEvent:
    """What the job is doing now. ``fraction`` is overall progress in [0, 1]."""

    stage: str  # a library stage, or a service stage ("download", "upload")
    current: int  # units done in this stage (frames)
    total: int  # units in this stage
    fraction: float  # overall, across stages

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        return cls(
            stage=str(data["stage"]),
            current=int(data["current"]),
            total=int(data["total"]),
            fraction=float(data["fraction"]),
        )


ProgressCallback = Callable[[ProgressEvent], None]
