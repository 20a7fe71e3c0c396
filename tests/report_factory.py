"""A small, valid RestoreReport for tests that need one without running a restoration (tests only)."""

from __future__ import annotations

from ipfvr_core.options import RestoreOptions
from ipfvr_core.report import (
    DistanceStats,
    FrameReport,
    IdentitySummary,
    ReferenceSummary,
    RestoreReport,
    TrackSummary,
    Transfer,
    VideoSummary,
)


def sample_report(
    *,
    video: str = "clip.mp4",
    references: tuple[str, ...] = ("face.png",),
    frames: int = 2,
    options: RestoreOptions | None = None,
    seconds: float = 0.5,
    warnings: tuple[str, ...] = (),
) -> RestoreReport:
    """A report of ``frames`` frames of a 176x144 ``video``, one face restored in each."""
    summary = VideoSummary(
        path=video,
        width=176,
        height=144,
        fps=25.0,
        frames=frames,
        duration_s=frames / 25,
        has_audio=False,
        codec="h264",
    )
    transfer = Transfer(reference=references[0] if references else None, confidence=0.8)
    rows = [
        FrameReport(
            index=i,
            time_s=i / 25,
            faces=1,
            restored=1,
            distance_before=[0.71],
            distance_before_restored=[0.71],
            distance_after=[0.52],
            transfer=[transfer if i % 2 else None],
        )
        for i in range(frames)
    ]
    stats = DistanceStats(n=frames, mean=0.6, median=0.6, min=0.5, max=0.7, p90=0.7)
    return RestoreReport(
        input=summary,
        output=VideoSummary(**{**summary.__dict__, "path": "restored.mp4"}),
        compare=None,
        options=options or RestoreOptions(),
        references=[
            ReferenceSummary(name=name, faces_found=1, distance_to_other_references=None) for name in references
        ],
        identity=IdentitySummary(
            metric="l2",
            same_person_threshold=0.6,
            target_max_distance=0.75,
            before=stats,
            after=stats,
            mean_improvement=0.19,
            embed_every=1,
            frames_measured=frames,
        ),
        tracks=[TrackSummary(id=0, first_frame=0, last_frame=frames - 1, frames=frames, restored=True)],
        frames=rows,
        frames_total=frames,
        frames_with_faces=frames,
        frames_restored=frames,
        timings_s={"restore": seconds, "total": seconds},
        fps=round(frames / seconds, 3),
        versions={"ipfvr_core": "test", "engine": "double"},
        warnings=list(warnings),
    )
