"""Decoding: a video's frames streamed one at a time, upright, with their original timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.stream import VideoStream

from ipfvr_core.errors import InputError
from ipfvr_core.video_io.media import VideoFrame, VideoInfo, error_reason, open_input
from ipfvr_core.video_io.probing import indexed_frame_count, probe, select_video_stream, tagged_duration_s

# A Matroska video whose frames stop this much (or two frames) short of its track duration is truncated.
_TRUNCATION_TOLERANCE_S = 0.5


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
    with open_input(source, field) as container:
        stream = select_video_stream(container, source, field)
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
                raise _damaged(source, field, index, error_reason(exc)) from exc
            for frame in frames:
                try:
                    image = frame.to_ndarray(format="rgb24")  # (H, W, 3) as stored
                except av.FFmpegError as exc:
                    raise _damaged(source, field, index, error_reason(exc)) from exc
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
    indexed = indexed_frame_count(stream)
    if indexed is not None:
        return f"the file ends after {packets} of the {indexed} frames its index lists" if packets < indexed else None
    track_s = tagged_duration_s(stream)
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
