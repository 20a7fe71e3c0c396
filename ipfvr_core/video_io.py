"""Video input and output with PyAV: probing, streaming decode, H.264 encode with audio passthrough.

Reading
    :func:`probe` opens a file, checks it against :class:`VideoLimits` and decodes the first frame
    (so a truncated or corrupt file is refused before any work starts) without decoding the rest.
    :func:`iter_frames` then streams upright RGB frames one at a time, keeping each frame's original
    timestamp so variable frame rate timing survives a round trip.

Writing
    :class:`VideoWriter` encodes H.264 (libx264, yuv420p, BT.709) into mp4/mov/mkv, places every frame
    at the timestamp it is given, copies the audio packets of a source file through unchanged
    (interleaved as frames arrive, trimmed to the video's end), writes into a temporary file next to
    the destination and renames it over the destination only when everything succeeded.

Every failure caused by the media is an :class:`~ipfvr_core.errors.InputError` or
:class:`~ipfvr_core.errors.OutputError` with a stable code; no PyAV exception escapes.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.container import InputContainer, OutputContainer
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc, Colorspace
from av.video.stream import VideoStream

from ipfvr_core.errors import ConfigError, InputError, OutputError

logger = logging.getLogger(__name__)

# Extensions VideoWriter can produce, and the FFmpeg muxer for each.
OUTPUT_FORMATS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
# x264 presets, fastest first.
X264_PRESETS: tuple[str, ...] = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)

# Packets probe() demuxes at most while looking for the first decodable frame.
_PROBE_MAX_PACKETS = 300
# Packet timestamps probe() samples for variable frame rate detection when the container has no full index.
_PROBE_PTS_SAMPLE = 64
# Index entries probe() reads at most for variable frame rate detection.
_VFR_MAX_INDEX_ENTRIES = 10_000
# Two frame intervals that differ by at most this many time-base ticks count as equal (rounding).
_VFR_TOLERANCE_TICKS = 1
# Demuxers probe() and iter_frames() may use: the video containers we support, plus audio-only
# containers so that an audio upload is reported as "no video stream". Only local files are read.
_INPUT_OPTIONS: dict[str, str] = {
    "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,wav,mp3,flac,aac",
    "protocol_whitelist": "file",
}
# Matroska's per-track DURATION tag: hours, minutes, seconds with a fraction.
_DURATION_TAG = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")
# A Matroska video whose frames stop this much (or two frames) short of its track duration is truncated.
_TRUNCATION_TOLERANCE_S = 0.5
# AVCOL_SPC_BT709 (FFmpeg's AVColorSpace value; PyAV exposes no enum for it).
_AVCOL_SPC_BT709 = 1


@dataclass(frozen=True)
class VideoLimits:
    """Upper bounds a video must respect before any work is done on it."""

    max_width: int = 3840  # display width in pixels (after rotation)
    max_height: int = 3840  # display height in pixels (after rotation)
    max_pixels: int = 3840 * 2160  # width * height of one frame
    max_duration_s: float = 600.0  # container or stream duration in seconds
    max_frames: int = 36_000  # frame count (exact or estimated)

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_pixels", "max_duration_s", "max_frames"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"VideoLimits.{name} must be positive, got {getattr(self, name)!r}",
                    field=name,
                    code="config_invalid",
                )


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


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def probe(path: str | Path, limits: VideoLimits | None = None, *, field: str = "video") -> VideoInfo:
    """Describe the video at ``path`` and check it against ``limits``; decodes only the first frame.

    Raises InputError (``field``) with code ``empty_video``, ``invalid_video``, ``no_video_stream``
    or ``limit_exceeded``.
    """
    source = Path(path)
    limits = limits or VideoLimits()
    _check_readable_file(source, field)
    try:
        with _open_input(source, field) as container:
            return _probe_container(container, source, limits, field)
    except av.FFmpegError as exc:
        raise InputError(
            f"{source.name} is not a readable video ({_reason(exc)})", field=field, code="invalid_video"
        ) from exc


def iter_frames(path: str | Path, info: VideoInfo | None = None, *, field: str = "video") -> Iterator[VideoFrame]:
    """Stream the frames of ``path`` one at a time, upright, RGB uint8, in presentation order.

    ``info`` is the result of :func:`probe` (probed here when omitted, eagerly, so probe errors raise
    at the call). Decoding errors part-way raise InputError(code="invalid_video") from the iterator.
    """
    source = Path(path)
    if info is None:
        info = probe(source, field=field)
    return _decode_frames(source, info, field)


def _decode_frames(source: Path, info: VideoInfo, field: str) -> Iterator[VideoFrame]:
    with _open_input(source, field) as container:
        stream = _select_video_stream(container, source, field)
        stream.thread_type = "AUTO"
        packets = container.demux(stream)
        demuxed = 0
        index = 0
        first_time_s = last_time_s = 0.0
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.is_corrupt:
                    # Frame-threaded decoding conceals a cut-short packet instead of failing on it.
                    raise _damaged(source, field, index, "a packet is cut short or damaged")
                demuxed += packet.size > 0
                frames = stream.decode(packet)
            except av.FFmpegError as exc:
                raise _damaged(source, field, index, _reason(exc)) from exc
            for frame in frames:
                try:
                    image = frame.to_ndarray(format="rgb24")  # (H, W, 3) as stored
                except av.FFmpegError as exc:
                    raise _damaged(source, field, index, _reason(exc)) from exc
                if image.shape[:2] != (info.coded_height, info.coded_width):
                    raise InputError(
                        f"{source.name}: frame {index} is {image.shape[1]}x{image.shape[0]} but the video started at "
                        f"{info.coded_width}x{info.coded_height}; videos that change resolution are not supported",
                        field=field,
                        code="invalid_video",
                    )
                upright = np.ascontiguousarray(rotate_upright(image, info.rotation))  # (H', W', 3)
                time_s = float(frame.pts * info.time_base) if frame.pts is not None else index / float(info.fps)
                if index == 0:
                    first_time_s = last_time_s = time_s
                last_time_s = max(last_time_s, time_s)
                yield VideoFrame(index=index, image=upright, pts=frame.pts, time_s=time_s)
                index += 1
        missing = _missing_data(stream, demuxed, index, last_time_s - first_time_s, info.fps)
        if missing is not None:
            raise _damaged(source, field, index, missing)
    if index == 0:
        raise InputError(f"{source.name} has no decodable frame", field=field, code="empty_video")


def _missing_data(stream: VideoStream, packets: int, frames: int, span_s: float, fps: Fraction) -> str | None:
    """Why the decoded frames fall short of what the container promises, or None when they do not.

    A file cut at a packet boundary simply ends without any decoding error: for mp4/mov the sample
    index says how many frames there should be; Matroska has no per-frame index, but its muxers
    record each track's duration (DURATION tag) up front.
    """
    indexed = _indexed_frame_count(stream)
    if indexed is not None:
        return f"the file ends after {packets} of the {indexed} frames its index lists" if packets < indexed else None
    track_s = _tagged_duration_s(stream)
    if track_s is None or frames == 0:
        return None
    decoded_s = span_s + 1 / float(fps)
    if decoded_s < track_s - max(2 / float(fps), _TRUNCATION_TOLERANCE_S):
        return f"the frames end after {decoded_s:.2f} s of a {track_s:.2f} s video track"
    return None


def _damaged(source: Path, field: str, frames_done: int, reason: str) -> InputError:
    return InputError(
        f"{source.name}: decoding failed after {frames_done} frames ({reason}); the file is truncated or corrupt",
        field=field,
        code="invalid_video",
    )


def rotate_upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a stored (H, W, C) frame ``rotation`` degrees clockwise (a view; 90/270 swap H and W)."""
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    return np.rot90(image, k=-(rotation // 90) % 4)  # np.rot90 turns counter-clockwise for positive k


def _check_readable_file(source: Path, field: str) -> None:
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


def _open_input(source: Path, field: str) -> InputContainer:
    try:
        return av.open(str(source), mode="r", metadata_errors="replace", container_options=_INPUT_OPTIONS)
    except av.FFmpegError as exc:
        reason = "not an mp4, mov, mkv or webm file" if exc.errno == errno.EINVAL else _reason(exc)
        raise InputError(
            f"{source.name} is not a readable video ({reason})", field=field, code="invalid_video"
        ) from exc


def _select_video_stream(container: InputContainer, source: Path, field: str) -> VideoStream:
    """First video stream that is a real track (not cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if not container.streams:
        raise InputError(f"{source.name} contains no streams", field=field, code="empty_video")
    cover = av.stream.Disposition.attached_pic
    kinds = ", ".join(sorted({"cover art" if s.disposition & cover else s.type for s in container.streams}))
    raise InputError(
        f"{source.name} has no video stream (it contains: {kinds})", field=field, code="no_video_stream"
    )


def _probe_container(container: InputContainer, source: Path, limits: VideoLimits, field: str) -> VideoInfo:
    stream = _select_video_stream(container, source, field)
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
        audio_codec=_codec_name(audio) if audio is not None else None,
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
                f"{source.name}: the first frame cannot be decoded ({_reason(exc)}); the file is truncated or corrupt",
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
    tagged = _tagged_duration_s(stream)
    if tagged is not None:
        return tagged
    if container.duration:
        return container.duration / av.time_base
    return None


def _tagged_duration_s(stream: VideoStream) -> float | None:
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


def _indexed_frame_count(stream: VideoStream) -> int | None:
    """Frame count of a complete per-frame index (mp4/mov sample tables), else None."""
    if stream.frames <= 0 or len(stream.index_entries) != stream.frames:
        return None  # no index, or only keyframes (Matroska cues)
    return stream.frames


def _index_timestamps(stream: VideoStream) -> list[int] | None:
    """Decode timestamps from a complete per-frame index, else None."""
    count = _indexed_frame_count(stream)
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


def _check_limit(
    what: str, name: str, value: float, limit: float, source: Path, field: str, unit: str = ""
) -> None:
    if value > limit:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        raise InputError(
            f"{source.name}: {what} {shown}{unit} exceeds {name}={limit}",
            field=field,
            code="limit_exceeded",
        )


def _codec_name(stream: av.stream.Stream) -> str:
    context = stream.codec_context
    return context.name if context is not None else stream.codec.name


def _reason(exc: BaseException) -> str:
    """One-line cause of a PyAV error, without the file path FFmpeg appends."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc).splitlines()[0]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def check_output_path(path: str | Path, field: str = "output") -> Path:
    """Check before any work that ``path`` can receive a video; returns it as an absolute path.

    Raises InputError(code="invalid_option") for an extension other than .mp4/.mov/.mkv and
    OutputError(code="output_not_writable") when the directory is missing or not writable, or the
    path is a directory.
    """
    target = Path(path).absolute()
    if target.suffix.lower() not in OUTPUT_FORMATS:
        raise InputError(
            f"{target.name}: unsupported extension {target.suffix or '(none)'!r}; use .mp4, .mov or .mkv",
            field=field,
            code="invalid_option",
        )
    parent = target.parent
    if target.is_dir():
        raise OutputError(f"{target} is a directory", field=field, code="output_not_writable")
    if not parent.exists():
        raise OutputError(f"directory {parent} does not exist", field=field, code="output_not_writable")
    if not parent.is_dir():
        raise OutputError(f"{parent} is not a directory", field=field, code="output_not_writable")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".ipfvr-write-check-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot create files in {parent} ({exc.strerror or exc})", field=field, code="output_not_writable"
        ) from exc
    return target


class _AudioPassthrough:
    """Copies the packets of a source's first audio stream into an output stream, in time order."""

    def __init__(self, path: Path, source: InputContainer, output: OutputContainer, field: str) -> None:
        self._name = path.name
        self._field = field
        self._source = source
        stream = source.streams.audio[0]
        self._output = output
        self._output_stream = output.add_stream_from_template(stream)
        self._packets = source.demux(stream)
        self._pending: av.Packet | None = None
        self.packets_copied = 0

    @staticmethod
    def open(path: Path, output: OutputContainer, field: str, output_field: str) -> _AudioPassthrough | None:
        """Attach the audio of ``path`` to ``output``; None when ``path`` has no audio stream."""
        source = _open_input(path, field)
        try:
            if not source.streams.audio:
                source.close()
                return None
            codec = _codec_name(source.streams.audio[0])
            if codec not in output.supported_codecs:
                raise OutputError(
                    f"audio codec {codec} of {path.name} cannot be stored in {output.format.name}; write .mkv instead",
                    field=output_field,
                    code="output_not_writable",
                )
            return _AudioPassthrough(path, source, output, field)
        except BaseException:
            source.close()
            raise

    def copy_until(self, end: Fraction) -> None:
        """Mux every remaining packet that starts before ``end`` seconds."""
        while True:
            if self._pending is None:
                self._pending = self._next_packet()
                if self._pending is None:
                    return
            start = self._start_time(self._pending)
            if start is not None and start >= end:
                return
            self._pending.stream = self._output_stream
            self._output.mux(self._pending)
            self._pending = None
            self.packets_copied += 1

    def close(self) -> None:
        self._source.close()

    def _next_packet(self) -> av.Packet | None:
        try:
            for packet in self._packets:
                if packet.size > 0:  # skip the empty flush packet demux yields at the end
                    return packet
        except av.FFmpegError as exc:
            raise InputError(
                f"{self._name}: its audio cannot be read ({_reason(exc)})", field=self._field, code="invalid_video"
            ) from exc
        return None

    @staticmethod
    def _start_time(packet: av.Packet) -> Fraction | None:
        timestamp = packet.pts if packet.pts is not None else packet.dts
        if timestamp is None or packet.time_base is None:
            return None
        return timestamp * Fraction(packet.time_base)


class VideoWriter:
    """H.264 (libx264, yuv420p, BT.709) writer with exact timestamps and audio passthrough.

    Use as a context manager. Frames go to a hidden temporary file beside ``path``; a clean exit
    renames it over ``path`` (atomically), an exception deletes it and leaves ``path`` untouched.

    ``time_base`` is the unit of the ``pts`` given to :meth:`write` (pass ``VideoInfo.time_base``
    and ``VideoFrame.pts`` to keep the input's timing, variable frame rate included); it defaults
    to ``1/fps``. Timestamps survive exactly in mp4/mov; Matroska stores milliseconds.

    With ``audio_from``, the first audio stream of that file is copied without re-encoding,
    interleaved with the video as frames are written, and trimmed at packet granularity: packets
    that start before the end of the last frame are kept.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        crf: int = 18,
        preset: str = "medium",
        audio_from: str | Path | None = None,
        field: str = "output",
        audio_field: str = "video",
    ) -> None:
        fps = Fraction(fps)
        _validate_encoding(width, height, fps, time_base, crf, preset)
        self.path = check_output_path(path, field)
        self._field = field
        self._width = width
        self._height = height
        self._fps = fps
        self._time_base = Fraction(time_base) if time_base is not None else 1 / fps
        self._frame_ticks = (1 / fps) / self._time_base  # ticks of time_base per frame at fps
        self._temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.part")
        self._container: OutputContainer | None = None
        self._audio: _AudioPassthrough | None = None
        self._frames = 0
        self._last_pts: int | None = None
        self._closed = False
        try:
            self._container = self._open_container()
            self._stream = self._add_video_stream(self._container, crf, preset)
            if audio_from is not None:
                self._audio = _AudioPassthrough.open(Path(audio_from), self._container, audio_field, field)
        except BaseException:
            self._discard()
            raise

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by :meth:`write` so far."""
        return self._frames

    @property
    def has_audio(self) -> bool:
        """Whether audio is being copied from ``audio_from``."""
        return self._audio is not None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one (height, width, 3) uint8 RGB frame at ``pts`` (time_base units; default: next 1/fps slot)."""
        if self._closed or self._container is None:
            raise ValueError("write() on a closed VideoWriter")
        if image.shape != (self._height, self._width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self._height}, {self._width}, 3) uint8 image, got {image.shape} {image.dtype}"
            )
        if pts is None:
            pts = round(self._frames * self._frame_ticks)
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + max(1, round(self._frame_ticks))
        elif self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: got {pts} after {self._last_pts}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
        frame.pts = pts
        frame.time_base = self._time_base
        try:
            if self._audio is not None:
                self._audio.copy_until(pts * self._time_base)
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise OutputError(
                f"writing {self.path.name} failed ({_reason(exc)})", field=self._field, code="output_not_writable"
            ) from exc
        self._frames += 1
        self._last_pts = pts

    def close(self) -> None:
        """Flush the encoder and the remaining audio, finish the file and move it to ``path``."""
        if self._closed:
            return
        if self._container is None or self._last_pts is None:
            self.abort()
            raise ValueError(f"no frame was written; {self.path.name} was not created")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.copy_until((self._last_pts + self._frame_ticks) * self._time_base)
                self._audio.close()
                self._audio = None
            container, self._container = self._container, None
            container.close()
            os.replace(self._temp, self.path)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise OutputError(
                f"finishing {self.path.name} failed ({_reason(exc)})", field=self._field, code="output_not_writable"
            ) from exc
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Stop without producing ``path``: close everything and delete the temporary file."""
        self._closed = True
        self._discard()

    def _open_container(self) -> OutputContainer:
        muxer = OUTPUT_FORMATS[self.path.suffix.lower()]
        options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
        try:
            return av.open(str(self._temp), mode="w", format=muxer, options=options)
        except av.FFmpegError as exc:
            raise OutputError(
                f"cannot create {self.path.name} ({_reason(exc)})", field=self._field, code="output_not_writable"
            ) from exc

    def _add_video_stream(self, container: OutputContainer, crf: int, preset: str) -> VideoStream:
        stream = container.add_stream("libx264", rate=self._fps, options={"crf": str(crf), "preset": preset})
        stream.width = self._width
        stream.height = self._height
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.time_base = self._time_base
        # Frames are converted with the BT.709 matrix in limited range; tag them so players agree.
        context.colorspace = _AVCOL_SPC_BT709
        context.color_primaries = ColorPrimaries.BT709.value
        context.color_trc = ColorTrc.BT709.value
        context.color_range = ColorRange.MPEG.value
        return stream

    def _discard(self) -> None:
        """Release PyAV resources and delete the temporary file; errors here must not mask the cause."""
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except av.FFmpegError:
                # The file is deleted below, so a failure to finalise it only matters for debugging.
                logger.debug("closing the discarded output %s failed", self._temp, exc_info=True)
        self._temp.unlink(missing_ok=True)


def _validate_encoding(
    width: int, height: int, fps: Fraction, time_base: Fraction | None, crf: int, preset: str
) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
            raise InputError(
                f"{name} must be even and at least 2 for yuv420p, got {value}; crop with even_size()",
                field=name,
                code="invalid_option",
            )
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}", field="fps", code="invalid_option")
    if time_base is not None and time_base <= 0:
        raise InputError(f"time_base must be positive, got {time_base}", field="time_base", code="invalid_option")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise InputError(f"crf must be an integer from 0 to 51, got {crf!r}", field="crf", code="invalid_option")
    if preset not in X264_PRESETS:
        raise InputError(
            f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}", field="preset", code="invalid_option"
        )
