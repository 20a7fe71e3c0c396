"""The parts of a :class:`~ipfvr_core.report.RestoreReport` that a restoration measures as it goes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ipfvr_core.engines.base import CropNote
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.tracks import Track
from ipfvr_core.identity import ReferenceSet, distance_to_references
from ipfvr_core.report import (
    DistanceStats,
    FrameReport,
    IdentitySummary,
    ReferenceSummary,
    TrackSummary,
    Transfer,
    VideoSummary,
)
from ipfvr_core.restore.streamer import RestoredFrame
from ipfvr_core.upscale import upscaled_points
from ipfvr_core.video_io import VideoInfo


def video_summary(info: VideoInfo, path: str | Path) -> VideoSummary:
    return VideoSummary(
        path=str(path),
        width=info.width,
        height=info.height,
        fps=float(info.fps),
        frames=info.frame_count,
        duration_s=round(info.duration_s, 4),
        has_audio=info.has_audio,
        codec=info.codec,
    )


def reference_summaries(refs: ReferenceSet) -> list[ReferenceSummary]:
    return [
        ReferenceSummary(
            name=r.name,
            faces_found=r.faces_found,
            distance_to_other_references=refs.consistency[i] if refs.consistency else None,
        )
        for i, r in enumerate(refs.references)
    ]


def distance_stats(distances: Sequence[float]) -> DistanceStats:
    if not distances:
        return DistanceStats(n=0, mean=None, median=None, min=None, max=None, p90=None)
    arr = np.asarray(distances, dtype=np.float64)
    return DistanceStats(
        n=int(arr.size),
        mean=round(float(arr.mean()), 4),
        median=round(float(np.median(arr)), 4),
        min=round(float(arr.min()), 4),
        max=round(float(arr.max()), 4),
        p90=round(float(np.percentile(arr, 90)), 4),
    )


def identity_summary(
    refs: ReferenceSet, target_max_distance: float, frames: Sequence[FrameReport], embed_every: int
) -> IdentitySummary:
    before = [d for fr in frames for d in fr.distance_before_restored]
    after = [d for fr in frames for d in fr.distance_after]
    return IdentitySummary(
        metric=refs.metric,
        same_person_threshold=refs.threshold,
        target_max_distance=target_max_distance,
        before=distance_stats(before),
        after=distance_stats(after),
        mean_improvement=round(float(np.mean(before) - np.mean(after)), 4) if before and after else None,
        embed_every=embed_every,
        frames_measured=sum(1 for fr in frames if fr.distance_after),
    )


def track_summaries(tracks: Sequence[Track], selected: Sequence[Track]) -> list[TrackSummary]:
    chosen = {t.id for t in selected}
    return [
        TrackSummary(
            id=t.id, first_frame=t.frames[0], last_frame=t.frames[-1], frames=len(t.frames), restored=t.id in chosen
        )
        for t in tracks
    ]


class FrameMeter:
    """Measures each written frame for the report: its faces, and identity before and after restoration."""

    def __init__(self, analyzer: FaceAnalyzer, refs: ReferenceSet, embed_every: int, scale: int) -> None:
        self._analyzer = analyzer
        self._refs = refs
        self._embed_every = embed_every
        self._scale = scale

    def measure(self, done: RestoredFrame, restored: np.ndarray, detections: list[Face]) -> FrameReport:
        """``restored`` is the frame as written (sH, sW, 3); ``detections`` are the analysis' faces of the frame."""
        # Identity before and after, on the same face geometry: the faces the analysis embedded, and
        # on every embed_every-th frame the bridged ones too (interpolated, never detected or embedded).
        frame = done.frame
        before, after = [], []
        for rf in done.faces:
            face = rf.face
            if face.embedding is None and frame.index % self._embed_every != 0:
                continue
            emb_in = (
                face.embedding if face.embedding is not None else self._analyzer.embed(frame.image, _geometry(face))
            )
            emb_out = self._analyzer.embed(restored, _geometry(face, self._scale))
            before.append(self._distance(emb_in))
            after.append(self._distance(emb_out))
        return FrameReport(
            index=frame.index,
            time_s=round(frame.time_s, 4),
            faces=len(detections),
            restored=len(done.faces),
            distance_before=[self._distance(f.embedding) for f in detections if f.embedding is not None],
            distance_before_restored=before,
            distance_after=after,
            transfer=[self._transfer(rf.note) for rf in done.faces],
        )

    def _distance(self, embedding: np.ndarray) -> float:
        return round(distance_to_references(self._analyzer, embedding, self._refs), 4)

    def _transfer(self, note: CropNote | None) -> Transfer | None:
        """One restored face's reference transfer: which photo, how confident (None: the engine has no notes)."""
        if note is None:
            return None
        name = self._refs.references[note.reference].name if note.reference is not None else None
        return Transfer(reference=name, confidence=note.confidence)


def _geometry(face: Face, scale: int = 1) -> Face:
    """A copy of a face's box and landmarks only (embed() writes the embedding onto its argument),
    moved into the frame upscaled by ``scale``."""
    bbox = upscaled_points(face.bbox.reshape(2, 2), scale).reshape(4)  # (2, 2) corners -> (4,) x0, y0, x1, y1
    return Face(bbox=bbox.copy(), kps=upscaled_points(face.kps, scale).copy(), score=face.score)
