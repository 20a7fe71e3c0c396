"""Clip plan: how a face track of T frames is cut into F-frame clips that overlap by m frames.

Clip k starts where the previous one's last m frames start, so consecutive clips share exactly m
frames (the *context* of the later clip). Every clip is F frames long except the last one, which
holds only the frames that are left plus its m context frames; a track shorter than one clip is a
single clip of T frames. The streaming session in :mod:`ipfvr_core.engines.ipfvr` cuts clips by the
same rule without knowing T in advance, and its test checks it against :func:`plan_clips`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipfvr_core.errors import ConfigError


@dataclass(frozen=True)
class ClipSpan:
    """Frames ``[start, stop)`` of the track; the first ``context`` are shared with the previous clip."""

    start: int
    stop: int
    context: int

    @property
    def length(self) -> int:
        """Frames in the clip, context included."""
        return self.stop - self.start


def plan_clips(num_frames: int, clip_length: int, overlap: int) -> list[ClipSpan]:
    """Cut ``num_frames`` into clips of ``clip_length`` frames overlapping by ``overlap``."""
    if clip_length < 1:
        raise ConfigError(f"must be >= 1, got {clip_length}", field="clip_length")
    if not 0 <= overlap < clip_length:
        raise ConfigError(f"must be in [0, clip_length), got {overlap}", field="overlap")
    if num_frames < 0:
        raise ConfigError(f"must be >= 0, got {num_frames}", field="num_frames")
    spans: list[ClipSpan] = []
    start, context = 0, 0
    while True:
        stop = min(start + clip_length, num_frames)
        if stop - start <= context:  # no new frame left for another clip
            return spans
        spans.append(ClipSpan(start=start, stop=stop, context=context))
        if stop == num_frames:
            return spans
        start, context = stop - overlap, overlap


def unet_frame_evaluations(num_frames: int, clip_length: int, overlap: int) -> int:
    """Frames pushed through the U-Net per denoising step and per condition, summed over all clips."""
    return sum(span.length for span in plan_clips(num_frames, clip_length, overlap))
