"""Probing: what a video holds, checked against the limits, from its header and first frame only."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from ipfvr_core.errors import InputError
from ipfvr_core.limits import VideoLimits
from ipfvr_core.video_io.media import VideoInfo, codec_name, error_reason, open_input

# Packets probe() demuxes at most while looking for the first decodable frame.
_PROBE_MAX_PACKETS = 300
# Packet timestamps probe() samples for variable frame rate detection when the container has no full index.
_PROBE_PTS_SAMPLE = 64
# Index entries probe() reads at most for variable frame rate detection.
_VFR_MAX_INDEX_ENTRIES = 10_000
# Two frame intervals that differ by at most this many time-base ticks count as equal (rounding).
_VFR_TOLERANCE_TICKS = 1
# Matroska's per-track DURATION tag: hours, minutes, seconds with a fraction.
_DURATION_TAG = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")


def probe(path: str | Path, limits: VideoLimits | None = None, *, field: str = "video") -> VideoInfo:
    """Describe the video at ``path`` and check it against ``limits``; decodes only the first frame.

    Raises InputError (``field``) with code ``empty_video``, ``invalid_video``, ``no_video_stream``
    or ``limit_exceeded``.
    """
    source = Path(path)
    limits = limits or VideoLimits()
    check_readable_file(source, field)
    try:
        with open_input(source, field) as container:
            return _probe_container(container, source, limits, field)
    except av.FFmpegError as exc:
        raise InputError(
            f"{source.name} is not a readable video ({error_reason(exc)})", field=field, code="invalid_video"
        ) from exc


def check_readable_file(source: Path, field: str) -> None:
    try:
        stat = source.stat()
    except FileNotFoundError as exc:
        raise InputError(f"{source} does not exist", field=field, code="invalid_video") from exc
    except OSError as exc:
        raise InputError(f"{source} cannot be read ({exc.strerror})", field=field, code="invalid_video") from exc
    if source.is_dir():
        raise InputError(f"{source} is a directory, not a video file", field=field, code="invalid_video")
    if stat.st_size == 0:
        raise InputError(f"{source.name} is empty (0 bytes)", field=field, code="empty_video")


def select_video_stream(container: InputContainer, source: Path, field: str) -> VideoStream:
    """First video stream that is a real track (not cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if not container.streams:
        raise InputError(f"{source.name} contains no streams", field=field, code="empty_video")
    cover = av.stream.Disposition.attached_pic
    kinds = ", ".join(sorted({"cover art" if s.disposition & cover else s.type for s in container.streams}))
    raise InputError(f"{source.name} has no video stream (it contains: {kinds})", field=field, code="no_video_stream")


def _probe_container(container: InputContainer, source: Path, limits: VideoLimits, field: str) -> VideoInfo:
    stream = select_video_stream(container, source, field)
    context = stream.codec_context
    if context is None:
        raise InputError(
            f"{source.name}: its video codec has no decoder in this build", field=field, code="invalid_video"
        )
    if context.width and context.height:
        _check_pixels(context.width, context.height, limits, source, field)

    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps or fps <= 0:
        raise InputError(f"{source.name}: its frame rate is unknown", field=field, code="invalid_video")
    time_base = stream.time_base
    if time_base is None:
        raise InputError(f"{source.name}: its video stream has no time base", field=field, code="invalid_video")
    duration_s = _duration_s(container, stream)
    frame_count = stream.frames if stream.frames > 0 else None
    if duration_s is None:
        if frame_count is None:
            raise InputError(f"{source.name}: its duration is unknown", field=field, code="invalid_video")
        duration_s = float(frame_count / fps)
    if frame_count is None:
        frame_count = max(1, round(duration_s * fps))
    _check_limit("duration", "max_duration_s", duration_s, limits.max_duration_s, source, field, unit=" s")
    _check_limit("frame count", "max_frames", frame_count, limits.max_frames, source, field)

    first, sampled_pts = _first_frame(container, stream, source, field)
    coded_width, coded_height = first.width, first.height
    rotation = _clockwise_rotation(first, stream)
    width, height = (coded_height, coded_width) if rotation in (90, 270) else (coded_width, coded_height)
    _check_pixels(width, height, limits, source, field)
    _check_limit("width", "max_width", width, limits.max_width, source, field, unit=" px")
    _check_limit("height", "max_height", height, limits.max_height, source, field, unit=" px")

    audio = container.streams.audio[0] if container.streams.audio else None
    return VideoInfo(
        width=width,
        height=height,
        coded_width=coded_width,
        coded_height=coded_height,
        rotation=rotation,
        fps=Fraction(fps),
        time_base=Fraction(time_base),
        frame_count=frame_count,
        duration_s=duration_s,
        variable_frame_rate=_is_variable_frame_rate(stream, sampled_pts),
        codec=context.name,
        has_audio=audio is not None,
        audio_codec=codec_name(audio) if audio is not None else None,
    )


def _first_frame(
    container: InputContainer, stream: VideoStream, source: Path, field: str
) -> tuple[av.VideoFrame, list[int]]:
    """Decode the first frame; keep demuxing (without decoding) to sample a few packet timestamps."""
    first: av.VideoFrame | None = None
    sampled_pts: list[int] = []
    packets = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                packets += 1
                if packet.pts is not None:
                    sampled_pts.append(packet.pts)
            if first is None:
                if packet.is_corrupt:
                    raise InputError(
                        f"{source.name}: the first frame cannot be decoded (its data is cut short); "
                        "the file is truncated",
                        field=field,
                        code="invalid_video",
                    )
                decoded = stream.decode(packet)
                if decoded:
                    first = decoded[0]
                elif packets >= _PROBE_MAX_PACKETS:
                    break
            if first is not None and len(sampled_pts) >= _PROBE_PTS_SAMPLE:
                break
    except av.FFmpegError as exc:
        if first is None:
            raise InputError(
                f"{source.name}: the first frame cannot be decoded ({error_reason(exc)}); "
                "the file is truncated or corrupt",
                field=field,
                code="invalid_video",
            ) from exc
        # Damage after the first frame is reported by iter_frames when it gets there.
    if first is None:
        if packets == 0:
            raise InputError(f"{source.name}: its video stream has no frames", field=field, code="empty_video")
        raise InputError(
            f"{source.name}: no frame could be decoded from its first {packets} packets",
            field=field,
            code="invalid_video",
        )
    return first, sampled_pts


def _duration_s(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = tagged_duration_s(stream)
    if tagged is not None:
        return tagged
    if container.duration:
        return container.duration / av.time_base
    return None


def tagged_duration_s(stream: VideoStream) -> float | None:
    """A Matroska track's own duration, from its DURATION tag ("HH:MM:SS.nnnnnnnnn"), else None."""
    match = _DURATION_TAG.fullmatch(stream.metadata.get("DURATION", "").strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _clockwise_rotation(frame: av.VideoFrame, stream: VideoStream) -> int:
    """Clockwise degrees that make the stored frame upright, from the display matrix or a "rotate" tag."""
    # VideoFrame.rotation is the display matrix's counter-clockwise angle in [-180, 180]; FFmpeg
    # attaches the container's matrix (mp4/mov tkhd, mkv projection) to every decoded frame.
    counter_clockwise = frame.rotation
    if counter_clockwise:
        clockwise = -counter_clockwise
    else:
        # Older FFmpeg exposed the matrix as a clockwise "rotate" tag and copied it into remuxes.
        tags = {key.lower(): value.strip() for key, value in stream.metadata.items()}
        tag = tags.get("rotate", "0")
        clockwise = int(tag) if tag.lstrip("-").isdigit() else 0
    return (round(clockwise / 90) * 90) % 360


def _is_variable_frame_rate(stream: VideoStream, sampled_pts: list[int]) -> bool:
    """True when frame intervals differ: from the full sample index (mp4/mov) or sampled packet pts."""
    timestamps = _index_timestamps(stream)
    if timestamps is None:
        timestamps = sorted(sampled_pts)
    if len(timestamps) >= 3:
        intervals = np.diff(np.asarray(timestamps, dtype=np.int64))  # (N-1,)
        return int(intervals.max() - intervals.min()) > _VFR_TOLERANCE_TICKS
    return bool(stream.average_rate and stream.base_rate and stream.average_rate != stream.base_rate)


def indexed_frame_count(stream: VideoStream) -> int | None:
    """Frame count of a complete per-frame index (mp4/mov sample tables), else None."""
    if stream.frames <= 0 or len(stream.index_entries) != stream.frames:
        return None  # no index, or only keyframes (Matroska cues)
    return stream.frames


def _index_timestamps(stream: VideoStream) -> list[int] | None:
    """Decode timestamps from a complete per-frame index, else None."""
    count = indexed_frame_count(stream)
    if count is None:
        return None
    entries = stream.index_entries
    return [entry.timestamp for entry in entries[: min(count, _VFR_MAX_INDEX_ENTRIES)] if not entry.is_discard]


def _check_pixels(width: int, height: int, limits: VideoLimits, source: Path, field: str) -> None:
    if width * height > limits.max_pixels:
        raise InputError(
            f"{source.name}: {width}x{height} = {width * height} pixels per frame "
            f"exceeds max_pixels={limits.max_pixels}",
            field=field,
            code="limit_exceeded",
        )


def _check_limit(what: str, name: str, value: float, limit: float, source: Path, field: str, unit: str = "") -> None:
    if value > limit:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        raise InputError(
            f"{source.name}: {what} {shown}{unit} exceeds {name}={limit}",
            field=field,
            code="limit_exceeded",
        )
