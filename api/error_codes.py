"""Every error code the API answers: its HTTP status and what it means, in one table.

Three readers use it: the exception handlers (``api/errors.py``) take an error's status from it,
the OpenAPI document lists, per operation, the codes that operation declares (an ``enum`` per
status), and ``docs/service.md`` carries the same table (``python -m api.openapi --error-table``).
A code missing here is a programming error: it answers 500 ``internal_error`` and is logged.

Operations declare their own codes with :func:`declare`; the ones every operation of a kind can
answer (authentication and rate limits, a request body's size) are added by ``api/openapi.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    status: int  # the HTTP status the code is always answered with
    meaning: str  # one line for the OpenAPI document and the docs table


CODES: dict[str, ErrorCode] = {
    # 400-405: the request itself
    "bad_request": ErrorCode(400, "the body cannot be parsed"),
    "unauthorized": ErrorCode(401, "no API key, or an unknown one"),
    "not_found": ErrorCode(404, "no such job for this API key (another tenant's job is not found either)"),
    "identity_not_found": ErrorCode(404, "no such identity for this API key (another tenant's is not found either)"),
    "method_not_allowed": ErrorCode(405, "the path exists, the method does not"),
    # 409-410: the resource's state
    "conflict": ErrorCode(409, "the job changed while the request was handled; retry"),
    "job_not_terminal": ErrorCode(409, "the job is still queued or running; cancel it and wait until it ends"),
    "upload_unavailable": ErrorCode(409, "the upload was not issued to this API key, or another job uses it"),
    "identity_not_ready": ErrorCode(409, "the identity named in the job has not finished training, or failed"),
    "job_deleted": ErrorCode(410, "the job was deleted; only its tombstone is left"),
    # 413: sizes
    "payload_too_large": ErrorCode(413, "the request body, or its options field, is larger than the limit"),
    "video_too_large": ErrorCode(413, "the video file is larger than the limit"),
    "reference_too_large": ErrorCode(413, "a reference photo's file or pixel count is larger than the limit"),
    # 415: content types
    "unsupported_content_type": ErrorCode(415, "the request is neither multipart/form-data nor application/json"),
    "unsupported_media_type": ErrorCode(415, "a file is not an accepted format (checked from its content)"),
    # 422: the request's content
    "invalid_request": ErrorCode(422, "a query parameter, header or JSON field does not validate"),
    "invalid_option": ErrorCode(422, "a job option has an invalid value"),
    "invalid_options": ErrorCode(422, "the options field is not UTF-8 text"),
    "invalid_multipart": ErrorCode(422, "the multipart body is malformed or ends early"),
    "invalid_cursor": ErrorCode(422, "the cursor was not returned by this API"),
    "missing_field": ErrorCode(422, "the video or a reference photo is missing"),
    "duplicate_field": ErrorCode(422, "a form field that is allowed once came twice"),
    "unknown_field": ErrorCode(422, "a form field other than video, reference and options"),
    "too_many_references": ErrorCode(422, "more reference photos than the limit"),
    "empty_file": ErrorCode(422, "a file part has no bytes"),
    "upload_not_found": ErrorCode(422, "the upload id was never issued, or nothing was uploaded to it"),
    "invalid_reference": ErrorCode(422, "a reference photo is damaged (empty, cut short, or with data appended)"),
    "no_video_stream": ErrorCode(422, "the video file has no video track"),
    "video_too_small": ErrorCode(422, "the video's frames are smaller than the minimum side"),
    "limit_exceeded": ErrorCode(422, "the video's frame size or duration is above the limits"),
    "webhook_url_forbidden": ErrorCode(422, "the webhook URL is malformed or points at a forbidden address"),
    "idempotency_key_reused": ErrorCode(422, "the Idempotency-Key was used before for a different request"),
    # 429: quotas
    "rate_limited": ErrorCode(429, "the API key spent its request budget; wait Retry-After seconds"),
    "too_many_queued_jobs": ErrorCode(429, "the API key already has the most queued jobs allowed"),
    "too_many_identities": ErrorCode(429, "the API key already keeps the most identities allowed; delete one"),
    # 500, 503: the service
    "internal_error": ErrorCode(500, "a bug; the request was logged"),
    "service_unavailable": ErrorCode(503, "the broker refused the job; submit it again"),
    "store_unavailable": ErrorCode(503, "the job store (Redis) is unreachable; retry after Retry-After"),
    "storage_unavailable": ErrorCode(503, "object storage (S3) is unreachable"),
    "redis_unavailable": ErrorCode(503, "not ready: Redis is unreachable"),
}

# Answered by every operation that takes an API key (dependencies), and every one with a body (middleware).
AUTHENTICATED = ("unauthorized", "rate_limited", "store_unavailable")
WITH_BODY = ("bad_request", "payload_too_large", "invalid_request")

DECLARED = "x-error-codes"  # the OpenAPI extension :func:`declare` writes; ``api/openapi.py`` expands it


# What every multipart upload of photos (a job's or an identity's) can answer: the body's parsing
# (api/multipart.py), the photos' checks, and the store and S3 it writes to.
UPLOAD_CODES = (
    "invalid_request",
    "upload_unavailable",
    "reference_too_large",
    "unsupported_content_type",
    "unsupported_media_type",
    "invalid_option",
    "invalid_options",
    "invalid_multipart",
    "missing_field",
    "duplicate_field",
    "unknown_field",
    "too_many_references",
    "empty_file",
    "invalid_reference",
    "service_unavailable",
    "storage_unavailable",
)


def declare(*codes: str) -> dict[str, Any]:
    """``openapi_extra`` for a route: the codes it can answer besides the common ones."""
    unknown = [c for c in codes if c not in CODES]
    if unknown:
        raise KeyError(f"undeclared error codes {unknown}: add them to api/error_codes.CODES")
    return {DECLARED: list(codes)}
