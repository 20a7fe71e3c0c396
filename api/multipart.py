"""Stream a ``multipart/form-data`` job request straight into S3, part by part.

The body is parsed incrementally (``python_multipart``) as it arrives; each file part is sniffed
from its first bytes (415 if it is not an accepted video or image), its declared headers are
checked against the limits from its first and last bytes (``jobs.media.checks``: an early 4xx for
a 100000x100000 frame, a 10-hour duration, an audio-only file, a PNG bomb or a PNG with data
appended), counted against its own limit (413), and fed to an S3 multipart upload that holds at
most one part in memory. Nothing is spooled to disk and nothing is held whole (the head and a
bounded tail are kept for the checks). On any error every object written so far is removed.

The client's file names and part headers other than the field name are never used: object keys
are made from the tenant, the job id and the field alone.

Fields: ``video`` (one file), ``reference`` (one or more files), ``options`` (JSON text).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anyio import to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from jobs.errors import InvalidRequest, PayloadTooLarge, UnsupportedMedia
from jobs.media.checks import MediaLimits, check_upload
from jobs.media.header import HEAD_BYTES, TAIL_BYTES
from jobs.media.sniff import SNIFF_BYTES, Kind, sniff
from jobs.settings import Settings
from jobs.storage import ObjectWriter, Storage, input_key

if TYPE_CHECKING:  # python-multipart declares its callback types for type checkers only
    from python_multipart.multipart import MultipartCallbacks


@dataclass(frozen=True)
class ReceivedFile:
    field: str  # "video" or "reference[i]"
    key: str  # object key in the bucket
    size: int
    media_type: str  # sniffed from the content
    filename: str  # the client's file name, cleaned for display (never used in a key or a path); "" if none
    sha256: str  # hex digest of the content (the request fingerprint of an Idempotency-Key)


@dataclass
class JobForm:
    video: ReceivedFile | None = None
    references: list[ReceivedFile] = field(default_factory=list)
    options: str | None = None  # raw JSON text of the options field

    def object_keys(self) -> list[str]:
        return [f.key for f in ([self.video] if self.video else []) + self.references]


class _Tail:
    """The last ``size`` bytes of a stream, kept as whole chunks (no copy per chunk)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._chunks: deque[bytes] = deque()
        self._length = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._length += len(data)
        while self._chunks and self._length - len(self._chunks[0]) >= self.size:
            self._length -= len(self._chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self._chunks)[-self.size :]


class _FileSink:
    """One file part: sniff and check its head, stream it into an S3 upload, check its tail."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        field_name: str,
        kind: Kind,
        limit: int,
        limits: MediaLimits,
        filename: str = "",
    ) -> None:
        self.storage = storage
        self.key = key
        self.field = field_name
        self.filename = filename
        self.kind = kind
        self.limit = limit
        self.limits = limits
        self.head = bytearray()  # until the writer opens: the first HEAD_BYTES
        self.first = b""  # the first HEAD_BYTES, kept for the final check
        self.media_type = ""
        self.tail = _Tail(TAIL_BYTES if kind is Kind.VIDEO else 64)
        self.writer: ObjectWriter | None = None
        self.size = 0
        self.digest = hashlib.sha256()

    async def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            code = "video_too_large" if self.kind is Kind.VIDEO else "reference_too_large"
            raise PayloadTooLarge(f"{self.field} is larger than {self.limit} bytes", field=self.field, code=code)
        self.digest.update(data)
        self.tail.add(data)
        if self.writer is None:
            self.head += data
            if len(self.head) < HEAD_BYTES:
                return
            data, self.head = bytes(self.head), bytearray()
            self.writer = self._open(data)
        if self.writer.feed(data):
            await to_thread.run_sync(self.writer.upload_ready_parts)

    def _open(self, head: bytes) -> ObjectWriter:
        found = sniff(head[:SNIFF_BYTES])
        accepted = "an MP4, MOV, MKV or WebM video" if self.kind is Kind.VIDEO else "a PNG, JPEG or WebP image"
        if found is None or found[0] is not self.kind:
            raise UnsupportedMedia(f"{self.field} is not {accepted} (checked from its content)", field=self.field)
        self.first, self.media_type = head[:HEAD_BYTES], found[1]
        check_upload(self.kind, self.media_type, self.first, None, self.limits, self.field)
        return self.storage.writer(self.key, found[1])

    async def finish(self) -> ReceivedFile:
        if self.writer is None:
            if not self.head:
                raise InvalidRequest(f"{self.field} is empty", field=self.field, code="empty_file")
            head, self.head = bytes(self.head), bytearray()
            self.writer = self._open(head)
            self.writer.feed(head)
        check_upload(self.kind, self.media_type, self.first, self.tail.value(), self.limits, self.field)
        await to_thread.run_sync(self.writer.complete)
        return ReceivedFile(
            field=self.field,
            key=self.key,
            size=self.size,
            media_type=self.writer.content_type,
            filename=self.filename,
            sha256=self.digest.hexdigest(),
        )

    async def abort(self) -> None:
        if self.writer is not None:
            await to_thread.run_sync(self.writer.abort)


class _TextSink:
    def __init__(self, field_name: str, limit: int) -> None:
        self.field = field_name
        self.limit = limit
        self.data = bytearray()

    async def feed(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.limit:
            raise PayloadTooLarge(f"{self.field} is larger than {self.limit} bytes", field=self.field)


class _Events:
    """Collects the parser's callbacks; they are handled asynchronously after each chunk."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        def on_part_begin() -> None:
            self.headers = {}

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._header_field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self._header_value += data[start:end]

        def on_header_end() -> None:
            self.headers[bytes(self._header_field).lower()] = bytes(self._header_value)
            self._header_field.clear()
            self._header_value.clear()

        def on_headers_finished() -> None:
            self.items.append(("headers", self.headers.get(b"content-disposition", b"")))

        def on_part_data(data: bytes, start: int, end: int) -> None:
            self.items.append(("data", data[start:end]))

        def on_part_end() -> None:
            self.items.append(("end", b""))

        def on_end() -> None:
            self.items.append(("done", b""))

        return {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        }


def boundary_of(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data needs a boundary", field="content-type", code="invalid_multipart")
    return boundary


async def receive_job_form(
    request: Request,
    *,
    storage: Storage,
    settings: Settings,
    tenant: str,
    job_id: str,
    key_of: Callable[[str], str] | None = None,
    max_references: int | None = None,
) -> JobForm:
    """Parse the request body, streaming files into ``inputs/{tenant}/{job_id}/`` (or ``key_of(name)``,
    name = ``video`` or ``reference-<i>``)."""
    events = _Events()
    parser = MultipartParser(boundary_of(request.headers.get("content-type", "")), events.callbacks())
    form = JobForm()
    limits = MediaLimits.from_settings(settings)
    sink: _FileSink | _TextSink | None = None
    written: list[str] = []
    done = False
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequest(f"the multipart body is malformed: {exc}", code="invalid_multipart") from exc
            items, events.items = events.items, []
            for kind, data in items:
                if kind == "headers":
                    sink = _open_sink(
                        data,
                        form,
                        storage,
                        settings,
                        limits,
                        key_of or (lambda name: input_key(tenant, job_id, name)),
                        max_references or settings.max_references,
                    )
                elif kind == "data" and sink is not None:
                    await sink.feed(data)
                elif kind == "end" and sink is not None:
                    if isinstance(sink, _FileSink):
                        written.append(sink.key)
                        received = await sink.finish()
                        if received.field == "video":
                            form.video = received
                        else:
                            form.references.append(received)
                    else:
                        form.options = sink.data.decode("utf-8", errors="strict")
                    sink = None
                elif kind == "done":
                    done = True
        if not done:
            raise InvalidRequest("the multipart body ended early", code="invalid_multipart")
    except UnicodeDecodeError as exc:
        await _discard(storage, sink, written)
        raise InvalidRequest("options must be UTF-8 JSON text", field="options", code="invalid_options") from exc
    except BaseException:
        await _discard(storage, sink, written)
        raise
    return form


MAX_DISPLAY_NAME = 120  # characters of a client's file name kept for messages


def display_name(raw: str) -> str:
    """A client's file name for messages: its last path segment, without control characters, bounded."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    shown = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return shown[:MAX_DISPLAY_NAME] if shown not in (".", "..") else ""


def _open_sink(
    disposition: bytes,
    form: JobForm,
    storage: Storage,
    settings: Settings,
    limits: MediaLimits,
    key_of: Callable[[str], str],
    max_references: int,
) -> _FileSink | _TextSink:
    _, params = parse_options_header(disposition)
    name = params.get(b"name", b"").decode("utf-8", errors="replace")
    filename = display_name(params.get(b"filename", b"").decode("utf-8", errors="replace"))
    if name == "video":
        if form.video is not None:
            raise InvalidRequest("send one video", field="video", code="duplicate_field")
        return _FileSink(storage, key_of("video"), "video", Kind.VIDEO, settings.max_video_bytes, limits, filename)
    if name == "reference":
        index = len(form.references)
        if index >= max_references:
            raise InvalidRequest(
                f"send at most {max_references} references", field="reference", code="too_many_references"
            )
        return _FileSink(
            storage,
            key_of(f"reference-{index}"),
            f"reference[{index}]",
            Kind.IMAGE,
            settings.max_reference_bytes,
            limits,
            filename,
        )
    if name == "options":
        if form.options is not None:
            raise InvalidRequest("send options once", field="options", code="duplicate_field")
        return _TextSink("options", settings.max_json_bytes)
    shown = name[:64]  # the client's text, echoed bounded (repr escapes control characters)
    raise InvalidRequest(
        f"unknown form field {shown!r}; expected video, reference, options", field=shown or "form", code="unknown_field"
    )


async def _discard(storage: Storage, sink: _FileSink | _TextSink | None, written: list[str]) -> None:
    if isinstance(sink, _FileSink):
        await sink.abort()
    if written:
        await to_thread.run_sync(storage.delete, written)
