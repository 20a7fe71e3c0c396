"""The report of one restoration: what was found, what was restored, how close to the reference, how long it took.

:class:`RestoreReport` is what ``Restorer.restore`` returns. :meth:`RestoreReport.to_dict` is its
one JSON form (``ipfvr restore --report``, the service's ``report.json`` and the summary in the job
object) and :meth:`RestoreReport.from_dict` reads it back. Standard library only: the report is a
contract, readable where the model stack is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipfvr_core.errors import OutputError
from ipfvr_core.options import RestoreOptions


@dataclass(frozen=True)
class VideoSummary:
    path: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    has_audio: bool
    codec: str


@dataclass(frozen=True)
class ReferenceSummary:
    name: str
    faces_found: int  # faces the analyzer found in the photo (the largest is used)
    distance_to_other_references: float | None  # mean identity distance to the other photos; None with one photo


@dataclass(frozen=True)
class DistanceStats:
    """Count, mean, median, min, max and p90 of identity distances (None when there are none)."""

    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    p90: float | None


@dataclass(frozen=True)
class IdentitySummary:
    metric: str  # "l2" (dlib) or "cosine" (ArcFace)
    same_person_threshold: float  # the analyzer's
    target_max_distance: float  # the gate of faces="target"
    before: DistanceStats  # input faces that were restored, to the references
    after: DistanceStats  # the same faces after restoration
    mean_improvement: float | None  # mean(before) - mean(after); positive = closer to the reference
    embed_every: int  # sampling of the analysis and of before/after
    frames_measured: int  # frames with an after distance

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentitySummary:
        return cls(**{**data, "before": DistanceStats(**data["before"]), "after": DistanceStats(**data["after"])})


@dataclass(frozen=True)
class TrackSummary:
    id: int
    first_frame: int
    last_frame: int
    frames: int
    restored: bool


@dataclass(frozen=True)
class Transfer:
    """One restored face's reference transfer: which photo (None: none), how confident (0 to 1)."""

    reference: str | None
    confidence: float


@dataclass(frozen=True)
class FrameReport:
    index: int
    time_s: float
    faces: int  # faces detected
    restored: int  # faces restored
    distance_before: list[float]  # every embedded detected face, to the references
    distance_before_restored: list[float]  # the restored faces measured, before
    distance_after: list[float]  # the same faces, after
    transfer: list[Transfer | None]  # per restored face; None where the engine says nothing

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameReport:
        transfer = [Transfer(**t) if t is not None else None for t in data["transfer"]]
        return cls(**{**data, "transfer": transfer})


@dataclass(frozen=True)
class RestoreReport:
    input: VideoSummary
    output: VideoSummary
    compare: str | None  # the side-by-side video, if one was written
    options: RestoreOptions
    references: list[ReferenceSummary]
    identity: IdentitySummary
    tracks: list[TrackSummary]
    frames: list[FrameReport]
    frames_total: int
    frames_with_faces: int
    frames_restored: int
    timings_s: dict[str, float]  # per stage, and "total"
    fps: float | None  # frames per second of the whole job
    versions: dict[str, str]  # library, engine and weights versions
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in field order."""
        data = dataclasses.asdict(self)
        data["options"] = self.options.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreReport:
        return cls(
            **{
                **data,
                "input": VideoSummary(**data["input"]),
                "output": VideoSummary(**data["output"]),
                "options": RestoreOptions.from_dict(data["options"]),
                "references": [ReferenceSummary(**r) for r in data["references"]],
                "identity": IdentitySummary.from_dict(data["identity"]),
                "tracks": [TrackSummary(**t) for t in data["tracks"]],
                "frames": [FrameReport.from_dict(f) for f in data["frames"]],
            }
        )


def write_report(report: RestoreReport, path: str | Path) -> Path:
    """Write the report as JSON atomically (temp file + rename)."""
    path = Path(path)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK) or path.is_dir():
        raise OutputError(f"cannot write {path}: its folder does not exist or is not writable", field="report")
    # Created with mode 0666 so that the umask decides (mkstemp would make it 0600).
    tmp = path.parent / f".report-{uuid.uuid4().hex[:12]}.json"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as fh:
            json.dump(report.to_dict(), fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror}", field="report") from exc
    return path
