"""The types of Redis replies to the service's clients, which decode (``jobs.backends.connect_redis``).

redis-py types a reply for any client: ``bytes | str`` (whether ``decode_responses`` is on or
not), and a ``ZRANGE`` as possibly (member, score) pairs. Our clients decode and our range reads
ask for no scores, so a reply is ``str``, a list of ``str`` or a ``str`` hash. These functions tell
the type checker so in one place; they cost nothing at run time and convert nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import cast

from redis.typing import EncodableT, FieldT


def text(reply: bytes | str) -> str:
    return cast(str, reply)


def optional_text(reply: bytes | str | None) -> str | None:
    return cast(str | None, reply)


def texts(reply: Sequence[object]) -> list[str]:
    """A list of members (``ZRANGE`` and kin without scores): a ``list`` of ``str``."""
    return cast(list[str], reply)


def text_set(reply: set[bytes | str]) -> set[str]:
    """A ``SMEMBERS``: a ``set`` of ``str``."""
    return cast(set[str], reply)


def text_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A ``HGETALL``: a ``dict`` of ``str`` to ``str``."""
    return cast(dict[str, str], reply)


def hash_mapping(fields: Mapping[str, str]) -> Mapping[FieldT, EncodableT]:
    """``fields`` as ``HSET``'s ``mapping`` argument: redis-py types its keys invariantly, so a
    ``dict[str, str]`` is not taken as the ``Mapping[FieldT, EncodableT]`` it is."""
    return cast(Mapping[FieldT, EncodableT], fields)


def decoded(value: bytes | str) -> str:
    """A Lua script's reply item as text, converted at run time (scripts may answer bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def now_or(now: float | None) -> float:
    """``now`` (seconds since the epoch), or the current time when None: the store's clock argument."""
    return time.time() if now is None else now
