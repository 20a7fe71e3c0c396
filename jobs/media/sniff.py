"""Media type from a file's first bytes (magic numbers), never from its name or declared type.

The API only reads headers here; decoding and probing the media is the worker's job.
"""

from __future__ import annotations

from enum import StrEnum

SNIFF_BYTES = 64  # enough for every signature below


class Kind(StrEnum):
    VIDEO = "video"
    IMAGE = "image"


_EBML = b"\x1a\x45\xdf\xa3"
_QUICKTIME_BRANDS = (b"qt  ",)
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ")  # iTunes/Flash audio-only files


def sniff(head: bytes) -> tuple[Kind, str] | None:
    """(kind, media type) of the content starting with ``head``, or None when it is not accepted.

    Videos: MP4/MOV (ISO base media ``ftyp`` box), Matroska and WebM (EBML header); an ISO file
    whose major brand is an audio one (``M4A``, ``M4B``...) is not a video.
    Images: PNG, JPEG, WebP.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return None
        return Kind.VIDEO, "video/quicktime" if brand in _QUICKTIME_BRANDS else "video/mp4"
    if head.startswith(_EBML):
        return Kind.VIDEO, "video/webm" if b"webm" in head[:SNIFF_BYTES] else "video/x-matroska"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind.IMAGE, "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return Kind.IMAGE, "image/jpeg"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Kind.IMAGE, "image/webp"
    return None
