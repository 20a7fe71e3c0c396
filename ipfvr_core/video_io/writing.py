"""Writing: H.264 into mp4/mov/mkv at exact timestamps, audio copied through, committed only on success."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.container import OutputContainer
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from av.video.stream import VideoStream

from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.video_io.audio import AudioPassthrough
from ipfvr_core.video_io.media import error_reason

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

# AVCOL_SPC_BT709 (FFmpeg's AVColorSpace value; PyAV exposes no enum for it).
_AVCOL_SPC_BT709 = 1


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
        self._audio: AudioPassthrough | None = None
        self._frames = 0
        self._last_pts: int | None = None
        self._closed = False
        try:
            self._container = self._open_container()
            self._stream = self._add_video_stream(self._container, crf, preset)
            if audio_from is not None:
                self._audio = AudioPassthrough.open(Path(audio_from), self._container, audio_field, field)
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
                f"writing {self.path.name} failed ({error_reason(exc)})", field=self._field, code="output_not_writable"
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
                f"finishing {self.path.name} failed ({error_reason(exc)})",
                field=self._field,
                code="output_not_writable",
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
                f"cannot create {self.path.name} ({error_reason(exc)})", field=self._field, code="output_not_writable"
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
