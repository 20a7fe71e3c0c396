"""Refuse uploads whose headers already break the limits, before any decoding (API side).

The API calls :func:`check_upload` twice per file: with the head only, as soon as it holds the
first :data:`~jobs.media.header.HEAD_BYTES` (an early 4xx, before the rest is streamed), and with
the tail once the whole file has arrived (a trailing ``moov``; the end of a PNG). Whatever a
header does not declare is left to the worker, whose decoder checks everything again and fails
the job with the library's stable code.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.errors import InvalidRequest, PayloadTooLarge
from jobs.media.header import VideoHeader, png_ends_cleanly, read_image_header, read_isobmff, read_matroska
from jobs.media.sniff import Kind
from jobs.settings import Settings

_MATROSKA_TYPES = frozenset({"video/webm", "video/x-matroska"})


@dataclass(frozen=True)
class MediaLimits:
    min_side: int  # smallest accepted video width/height, pixels
    max_side: int  # largest accepted video width/height, pixels
    max_pixels: int  # largest video frame area
    max_duration_s: float  # longest accepted video
    max_reference_pixels: int  # largest reference image area

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            min_side=settings.min_side,
            max_side=settings.max_side,
            max_pixels=settings.max_pixels,
            max_duration_s=settings.max_duration_s,
            max_reference_pixels=settings.max_reference_pixels,
        )


def check_upload(kind: Kind, media_type: str, head: bytes, tail: bytes | None, limits: MediaLimits, field: str) -> None:
    """Raise a service error when the declared headers break a limit; ``tail`` is None until the end."""
    if kind is Kind.VIDEO:
        if media_type in _MATROSKA_TYPES:
            header = read_matroska(head)
        else:
            header = read_isobmff(head, tail or b"")
        if header is not None:
            _check_video(header, limits, field)
        return
    image = read_image_header(head)
    if image is not None:
        if image.width <= 0 or image.height <= 0:
            raise InvalidRequest(
                f"{field} declares an empty {image.width}x{image.height} image", field=field, code="invalid_reference"
            )
        if image.width * image.height > limits.max_reference_pixels:
            raise PayloadTooLarge(
                f"{field} declares {image.width}x{image.height} pixels, above the limit of "
                f"{limits.max_reference_pixels}",
                field=field,
                code="reference_too_large",
            )
    if tail is not None and media_type == "image/png" and not png_ends_cleanly(tail):
        raise InvalidRequest(
            f"{field} does not end with the PNG end chunk: it is cut short or has data appended",
            field=field,
            code="invalid_reference",
        )


def _check_video(header: VideoHeader, limits: MediaLimits, field: str) -> None:
    if header.tracks_complete and not header.video_tracks:
        kinds = ", ".join(sorted({t.kind for t in header.tracks}))
        raise InvalidRequest(f"{field} has no video track (it declares: {kinds})", field=field, code="no_video_stream")
    for track in header.video_tracks:
        width, height = track.width, track.height
        if not (width and height):
            continue
        if min(width, height) < limits.min_side:
            raise InvalidRequest(
                f"{field} declares a {width}x{height} frame, below the minimum side of {limits.min_side} pixels",
                field=field,
                code="video_too_small",
            )
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise InvalidRequest(
                f"{field} declares a {width}x{height} frame, above the limits "
                f"({limits.max_side} per side, {limits.max_pixels} pixels)",
                field=field,
                code="limit_exceeded",
            )
    longest = header.longest_s
    if longest is not None and longest > limits.max_duration_s:
        raise InvalidRequest(
            f"{field} declares a duration of {longest:.0f} s, above the limit of {limits.max_duration_s:.0f} s",
            field=field,
            code="limit_exceeded",
        )
