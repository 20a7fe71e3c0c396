"""What a video is to the rest of the library, and the PyAV container helpers reading and writing share."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer

from ipfvr_core.errors import InputError

# Demuxers probe() and iter_frames() may use: the video containers we support, plus audio-only
# containers so that an audio upload is reported as "no video stream". Only local files are read.
INPUT_OPTIONS: dict[str, str] = {
    "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,wav,mp3,flac,aac",
    "protocol_whitelist": "file",
}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learned about a video (its first video stream)."""

    width: int  # display width: after rotation is applied
    height: int  # display height: after rotation is applied
    coded_width: int  # width of the stored (decoded, unrotated) frames
    coded_height: int  # height of the stored (decoded, unrotated) frames
    rotation: int  # degrees clockwise to rotate stored frames so they are upright: 0, 90, 180 or 270
    fps: Fraction  # average frame rate
    time_base: Fraction  # unit of VideoFrame.pts, in seconds
    frame_count: int  # exact when the container records it, else duration * fps rounded
    duration_s: float  # duration of the video stream (or of the container when the stream has none)
    variable_frame_rate: bool  # frame intervals differ (from the sample index or packet timestamps)
    codec: str  # FFmpeg decoder name: h264, hevc, vp9, mpeg4, ...
    has_audio: bool  # the file has at least one audio stream
    audio_codec: str | None  # codec of the first audio stream, None without audio


@dataclass
class VideoFrame:
    """One decoded frame, upright, in presentation order."""

    index: int  # 0-based position in presentation order
    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous, rotation applied
    pts: int | None  # presentation timestamp in VideoInfo.time_base units, as stored in the file
    time_s: float  # pts * time_base, or index / fps when the frame has no timestamp


def even_size(width: int, height: int) -> tuple[int, int]:
    """Largest even size not above (width, height): yuv420p needs both even (crop the last row/column)."""
    if width < 2 or height < 2:
        raise ValueError(f"a frame of {width}x{height} has no even-sized crop")
    return width - width % 2, height - height % 2


def open_input(source: Path, field: str) -> InputContainer:
    """Open ``source`` for reading with the demuxers we accept; an unreadable file is an InputError."""
    try:
        return av.open(str(source), mode="r", metadata_errors="replace", container_options=INPUT_OPTIONS)
    except av.FFmpegError as exc:
        reason = "not an mp4, mov, mkv or webm file" if exc.errno == errno.EINVAL else error_reason(exc)
        raise InputError(
            f"{source.name} is not a readable video ({reason})", field=field, code="invalid_video"
        ) from exc


def codec_name(stream: av.stream.Stream) -> str:
    """The FFmpeg codec name of ``stream`` (h264, aac, ...)."""
    context = stream.codec_context
    return context.name if context is not None else stream.codec.name


def error_reason(exc: BaseException) -> str:
    """One-line cause of a PyAV error, without the file path FFmpeg appends."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc).splitlines()[0]
