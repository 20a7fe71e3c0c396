"""Time-ordered identifiers: ``job_`` + 26 Crockford base32 characters (48-bit ms time, 80 random bits).

Lexicographic order is creation order (strictly within one process: ids made in the same
millisecond increment the random part, as in monotonic ULIDs), so Redis sorted sets holding ids with one score sort by
creation time (``ZRANGEBYLEX``), which gives stable cursors and FIFO queue positions for free.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case (ASCII order = value order)
_BODY = r"[0-9a-hjkmnp-tv-z]{26}"
JOB_ID = re.compile(rf"^job_{_BODY}$")
UPLOAD_ID = re.compile(rf"^upl_{_BODY}$")


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)  # (ms, random part) of the last id made by this process


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A new id such as ``job_01hx...``; ids made later in this process sort after earlier ones."""
    global _last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        last_ms, last_random = _last
        if ms <= last_ms and last_random + 1 < 2**_RANDOM_BITS:
            ms, random_part = last_ms, last_random + 1  # same (or a past) millisecond: keep the order
        else:
            random_part = secrets.randbits(_RANDOM_BITS - 1)  # room to increment within the millisecond
        _last = (ms, random_part)
    return f"{prefix}_{_encode(ms, 10)}{_encode(random_part, 16)}"


def new_job_id() -> str:
    return new_id("job")


def new_upload_id() -> str:
    return new_id("upl")
