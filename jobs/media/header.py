"""What a media file's headers declare (size, duration, tracks), read from its first and last bytes.

The API reads these from bytes it already holds while streaming an upload (the head it sniffs
and a bounded tail), without decoding anything: ISO base media (MP4/MOV: ``mvhd``, ``tkhd``,
``mdhd``, ``hdlr``, ``stsd`` inside ``moov``, which sits at the start of a "faststart" file and
at the end of most others), Matroska/WebM (``Info`` and ``Tracks`` before the first cluster) and
the still images we accept (PNG ``IHDR``, WebP ``VP8``/``VP8L``/``VP8X``, JPEG ``SOFn``).

Every parser treats its input as hostile: loops are bounded by the bytes given, lengths are
checked before use, and malformed input yields "unknown" (``None``), never an exception. The
worker's decoder remains the authority; these checks only refuse early what a header already
gives away (a 100000x100000 frame, a 10-hour duration, an audio-only file, a PNG bomb).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

TAIL_BYTES = 1024 * 1024  # bytes kept from the end of a video for a trailing ``moov``
HEAD_BYTES = 64 * 1024  # bytes read from the start of a file before it is accepted
_MAX_BOXES = 4096  # boxes or elements visited at most per container level
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every PNG ends with


@dataclass
class TrackHeader:
    kind: str  # "video", "audio" or another handler type
    width: int = 0  # declared width in pixels (0 = not declared)
    height: int = 0  # declared height in pixels
    duration_s: float | None = None  # declared track duration


@dataclass
class VideoHeader:
    """What the container declares; ``None``/empty where the bytes given did not say."""

    duration_s: float | None = None  # container duration
    tracks: list[TrackHeader] = field(default_factory=list)  # tracks found
    tracks_complete: bool = False  # the whole track list was read (absence of video is meaningful)

    @property
    def video_tracks(self) -> list[TrackHeader]:
        return [t for t in self.tracks if t.kind == "video"]

    @property
    def longest_s(self) -> float | None:
        values = [d for d in [self.duration_s, *(t.duration_s for t in self.tracks)] if d is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class ImageHeader:
    width: int  # declared width in pixels
    height: int  # declared height in pixels


# ---------------------------------------------------------------------------------------------- ISO BMFF
def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``data[start:end]``; a box may end past ``end``."""
    offset = start
    for _ in range(_MAX_BOXES):
        if offset + 8 > end:
            return
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset  # runs to the end of its container
        if size < header:
            return
        yield kind, offset + header, offset + size
        offset += size


def _full_box(data: bytes, start: int, end: int, v0: str, v1: str) -> tuple[int, ...] | None:
    """Unpack a full box's fields after its version/flags, by version; None when cut short."""
    if start + 4 > end:
        return None
    layout = ">" + (v1 if data[start] == 1 else v0)
    if start + 4 + struct.calcsize(layout) > end:
        return None
    return struct.unpack_from(layout, data, start + 4)


def _parse_trak(data: bytes, start: int, end: int) -> TrackHeader:
    track = TrackHeader(kind="unknown")
    tkhd_size = (0, 0)
    for kind, body, box_end in _boxes(data, start, end):
        stop = min(box_end, end)
        if kind == b"tkhd":
            # v0: created, modified, track id, reserved, duration (32-bit); v1: 64-bit times
            fields = _full_box(data, body, stop, "IIII I 8x 2x2x2x2x 36x II", "QQII Q 8x 2x2x2x2x 36x II")
            if fields is not None:
                tkhd_size = (fields[-2] >> 16, fields[-1] >> 16)  # 16.16 fixed point
        elif kind == b"mdia":
            _parse_mdia(data, body, stop, track)
    track.width = max(track.width, tkhd_size[0])
    track.height = max(track.height, tkhd_size[1])
    return track


def _parse_mdia(data: bytes, start: int, end: int, track: TrackHeader) -> None:
    for kind, body, box_end in _boxes(data, start, end):
        stop = min(box_end, end)
        if kind == b"mdhd":
            fields = _full_box(data, body, stop, "IIII", "QQIQ")  # created, modified, timescale, duration
            if fields is not None and fields[2] > 0:
                track.duration_s = fields[3] / fields[2]
        elif kind == b"hdlr" and body + 12 <= stop:
            handler = data[body + 8 : body + 12]  # after version/flags and pre_defined
            track.kind = {b"vide": "video", b"soun": "audio"}.get(handler, handler.decode("latin-1"))
        elif kind == b"minf" and track.kind == "video":  # hdlr comes first; audio entries have no size
            for inner, inner_body, inner_end in _boxes(data, body, stop):
                if inner == b"stbl":
                    _parse_stbl(data, inner_body, min(inner_end, stop), track)


def _parse_stbl(data: bytes, start: int, end: int, track: TrackHeader) -> None:
    for kind, body, box_end in _boxes(data, start, end):
        if kind != b"stsd":
            continue
        stop = min(box_end, end)
        for _entry, entry_body, entry_end in _boxes(data, body + 8, stop):  # after version/flags, entry count
            # VisualSampleEntry: reserved(6) data_reference_index(2) pre_defined(2) reserved(2)
            # pre_defined(12) width(2) height(2)
            if entry_body + 28 <= min(entry_end, stop):
                width, height = struct.unpack_from(">HH", data, entry_body + 24)
                track.width, track.height = max(track.width, width), max(track.height, height)


def _parse_moov(data: bytes, start: int, end: int, header: VideoHeader) -> None:
    complete = True
    for kind, body, box_end in _boxes(data, start, end):
        stop = min(box_end, end)
        if box_end > end:
            complete = False
        if kind == b"mvhd":
            fields = _full_box(data, body, stop, "IIII", "QQIQ")  # created, modified, timescale, duration
            if fields is not None and fields[2] > 0:
                header.duration_s = fields[3] / fields[2]
        elif kind == b"trak":
            track = _parse_trak(data, body, stop)
            if track.kind != "unknown" or track.width or track.height:
                header.tracks.append(track)
    header.tracks_complete = complete and bool(header.tracks)


def _find_moov(data: bytes) -> tuple[int, int] | None:
    """(payload start, end) of a ``moov`` box in a buffer that starts at a box boundary."""
    for kind, body, box_end in _boxes(data, 0, len(data)):
        if kind == b"moov":
            return body, min(box_end, len(data))
    return None


def _tiles_to_end(data: bytes, start: int) -> bool:
    """The boxes from ``start`` end exactly at the end of ``data`` (so ``start`` is a real box boundary)."""
    end = start
    for _kind, _body, box_end in _boxes(data, start, len(data)):
        end = box_end
    return end == len(data)


def _find_trailing_moov(tail: bytes) -> tuple[int, int] | None:
    """A ``moov`` box inside ``tail`` (a file's last bytes) from which whole boxes run to the file's end.

    Requiring the boxes to tile the rest of the file keeps the letters "moov" inside compressed
    media data from being taken for a header.
    """
    search = len(tail)
    for _ in range(_MAX_BOXES):
        at = tail.rfind(b"moov", 0, search)
        if at < 4:
            return None
        size = struct.unpack_from(">I", tail, at - 4)[0]
        if size >= 8 and at - 4 + size <= len(tail) and _tiles_to_end(tail, at - 4):
            return at + 4, at - 4 + size
        search = at
    return None


def read_isobmff(head: bytes, tail: bytes = b"") -> VideoHeader | None:
    """The header of an MP4/MOV file from its first bytes (and its last bytes, for a trailing ``moov``)."""
    try:
        header = VideoHeader()
        found = _find_moov(head)
        if found is not None:
            _parse_moov(head, *found, header)
            return header
        if tail:
            found = _find_trailing_moov(tail)
            if found is not None:
                _parse_moov(tail, *found, header)
                return header
        return None
    except (struct.error, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------- Matroska
_EBML_IDS = {
    "segment": 0x18538067,
    "info": 0x1549A966,
    "timecode_scale": 0x2AD7B1,
    "duration": 0x4489,
    "tracks": 0x1654AE6B,
    "track_entry": 0xAE,
    "track_type": 0x83,
    "video": 0xE0,
    "pixel_width": 0xB0,
    "pixel_height": 0xBA,
    "cluster": 0x1F43B675,
}
_UNKNOWN_SIZE = -1


def _vint(data: bytes, offset: int, keep_marker: bool) -> tuple[int, int]:
    """(value, length) of an EBML variable-length integer; size values of all ones are "unknown"."""
    first = data[offset]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or offset + length > len(data):
        raise ValueError("bad EBML integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[offset + 1 : offset + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return _UNKNOWN_SIZE, length
    return value, length


def _elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload end) of EBML elements in ``data[start:end]``."""
    offset = start
    for _ in range(_MAX_BOXES):
        if offset >= end:
            return
        try:
            element_id, id_length = _vint(data, offset, keep_marker=True)
            size, size_length = _vint(data, offset + id_length, keep_marker=False)
        except (ValueError, IndexError):
            return  # cut short or malformed: what was read so far stands
        body = offset + id_length + size_length
        stop = end if size == _UNKNOWN_SIZE else body + size
        yield element_id, body, stop
        offset = stop


def _uint(data: bytes, start: int, end: int) -> int:
    return int.from_bytes(data[start:end], "big") if 0 < end - start <= 8 else 0


def read_matroska(head: bytes) -> VideoHeader | None:
    """The header of a Matroska/WebM file from its first bytes (``Info`` and ``Tracks``)."""
    try:
        header = VideoHeader()
        scale = 1_000_000  # TimecodeScale default: 1 ms in ns
        raw_duration: float | None = None
        seen_tracks = False
        for element_id, body, stop in _elements(head, 0, len(head)):
            if element_id != _EBML_IDS["segment"]:
                continue
            for child, child_body, child_stop in _elements(head, body, min(stop, len(head))):
                child_end = min(child_stop, len(head))
                if child == _EBML_IDS["cluster"]:
                    break
                if child == _EBML_IDS["info"]:
                    for item, item_body, item_stop in _elements(head, child_body, child_end):
                        if item == _EBML_IDS["timecode_scale"]:
                            scale = _uint(head, item_body, item_stop) or scale
                        elif item == _EBML_IDS["duration"] and item_stop - item_body in (4, 8):
                            fmt = ">f" if item_stop - item_body == 4 else ">d"
                            raw_duration = struct.unpack_from(fmt, head, item_body)[0]
                elif child == _EBML_IDS["tracks"]:
                    seen_tracks = child_stop <= len(head)
                    for entry, entry_body, entry_stop in _elements(head, child_body, child_end):
                        if entry == _EBML_IDS["track_entry"]:
                            header.tracks.append(_matroska_track(head, entry_body, min(entry_stop, len(head))))
            break
        if raw_duration is not None and raw_duration == raw_duration:  # not NaN
            header.duration_s = raw_duration * scale / 1e9
        header.tracks_complete = seen_tracks and bool(header.tracks)
        return header if header.tracks or header.duration_s is not None else None
    except (struct.error, ValueError, IndexError):
        return None


def _matroska_track(data: bytes, start: int, end: int) -> TrackHeader:
    track = TrackHeader(kind="unknown")
    for item, body, stop in _elements(data, start, end):
        if item == _EBML_IDS["track_type"]:
            track.kind = {1: "video", 2: "audio"}.get(_uint(data, body, stop), "other")
        elif item == _EBML_IDS["video"]:
            for pixel, pixel_body, pixel_stop in _elements(data, body, min(stop, end)):
                if pixel == _EBML_IDS["pixel_width"]:
                    track.width = _uint(data, pixel_body, pixel_stop)
                elif pixel == _EBML_IDS["pixel_height"]:
                    track.height = _uint(data, pixel_body, pixel_stop)
    return track


# ---------------------------------------------------------------------------------------------- images
def read_image_header(head: bytes) -> ImageHeader | None:
    """Declared size of a PNG, WebP or JPEG from its first bytes; None when not found there."""
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack_from(">II", head, 16)
            return ImageHeader(width, height)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(head)
        return None
    except (struct.error, ValueError, IndexError):
        return None


def _webp_size(head: bytes) -> ImageHeader | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        return ImageHeader(width, height)
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return ImageHeader(1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return ImageHeader(width & 0x3FFF, height & 0x3FFF)
    return None


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(head: bytes) -> ImageHeader | None:
    offset = 2
    for _ in range(_MAX_BOXES):
        if offset + 4 > len(head) or head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        length = struct.unpack_from(">H", head, offset + 2)[0]
        if marker in _SOF_MARKERS:
            height, width = struct.unpack_from(">HH", head, offset + 5)
            return ImageHeader(width, height)
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        offset += 2 + length
    return None


def png_ends_cleanly(tail: bytes) -> bool:
    """A PNG ends with its IEND chunk: anything after it is appended data (a polyglot), a short end is a cut."""
    return tail.endswith(_PNG_END)
