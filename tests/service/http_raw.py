"""Read one whole HTTP/1.1 message off a raw socket, for tests that speak HTTP by hand.

Why: one ``recv`` returns whatever TCP has delivered so far, and a server that writes its headers
and its body in separate sends (uvicorn does) often lands them in separate segments, so a test that
reads once sees half a reply, at random. These readers frame the message the way HTTP does
(RFC 9112 section 6): the head up to the blank line, then ``Content-Length`` bytes, or the chunks of
a chunked body, or, for a response with neither, everything until the server closes. Every
``recv`` waits at most for what is left of one overall deadline, so a stuck peer fails the test
with ``TimeoutError`` instead of hanging it; nothing here sleeps.
"""

from __future__ import annotations

import socket
import time

Headers = dict[str, str]  # lower-cased field name -> value; repeated fields joined with ", "


class _Reader:
    """A receive buffer over ``sock`` with one deadline for the whole message."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + timeout
        self.buf = bytearray()

    def _fill(self) -> bool:
        """Receive one more segment; False at EOF."""
        self.sock.settimeout(max(self.deadline - time.monotonic(), 1e-3))  # never 0: that means non-blocking
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError as e:
            raise TimeoutError(f"HTTP message incomplete at the deadline; have {bytes(self.buf[:200])!r}") from e
        self.buf += chunk
        return bool(chunk)

    def until(self, marker: bytes) -> bytes:
        """The bytes before ``marker``; the marker itself is consumed."""
        while (at := self.buf.find(marker)) < 0:
            if not self._fill():
                raise ConnectionError(f"peer closed before {marker!r}; have {bytes(self.buf[:200])!r}")
        out = bytes(self.buf[:at])
        del self.buf[: at + len(marker)]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"peer closed after {len(self.buf)} of {n} body bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_eof(self) -> bytes:
        while self._fill():
            pass  # keep receiving: the close is what ends this body
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _head(reader: _Reader) -> tuple[str, Headers]:
    """The start line and the header fields."""
    start_line, *lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    headers: Headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return start_line, headers


def _chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while size := int(reader.until(b"\r\n").split(b";")[0].strip(), 16):  # chunk extensions ignored
        body += reader.exactly(size)
        if reader.until(b"\r\n"):
            raise ValueError("chunk data longer than its declared size")
    while reader.until(b"\r\n"):
        pass  # trailer fields, up to the empty line that ends the message
    return bytes(body)


def _body(reader: _Reader, headers: Headers, *, until_eof: bool) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader)
    if "content-length" in headers:
        return reader.exactly(int(headers["content-length"]))
    return reader.to_eof() if until_eof else b""


def read_http_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, Headers, bytes]:
    """``(status, headers, body)`` of the next response on ``sock``, all of it, within ``timeout`` seconds.

    A response without length or chunking runs until the server closes. 1xx, 204 and 304 carry no
    body; an interim 1xx is returned as it is, not skipped.
    """
    reader = _Reader(sock, timeout)
    status_line, headers = _head(reader)
    status = int(status_line.split(" ", 2)[1])  # "HTTP/1.1 413 Payload Too Large" -> 413
    if status < 200 or status in (204, 304):
        return status, headers, b""
    return status, headers, _body(reader, headers, until_eof=True)


def read_http_request(sock: socket.socket, timeout: float = 10.0) -> tuple[str, Headers, bytes]:
    """``(request_line, headers, body)`` of the next request on ``sock``; no length means no body."""
    reader = _Reader(sock, timeout)
    request_line, headers = _head(reader)
    return request_line, headers, _body(reader, headers, until_eof=False)
