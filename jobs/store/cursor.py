"""List cursors: the last job id of a page, opaque to the client (URL-safe base64, no padding)."""

from __future__ import annotations

import base64

from jobs.errors import InvalidRequest
from jobs.ids import JOB_ID


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("not a cursor returned by this API", field="cursor", code="invalid_cursor") from exc
    if not JOB_ID.match(job_id):
        raise InvalidRequest("not a cursor returned by this API", field="cursor", code="invalid_cursor")
    return job_id
