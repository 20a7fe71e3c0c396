"""Errors of the job service, each with a stable ``code`` and, where it applies, the ``field``.

They describe what went wrong in service terms only; the API maps each class to an HTTP status
in ``api/errors.py`` and nowhere else. Library errors (``ipfvr_core.errors``) keep their own codes.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``code`` is stable across releases, ``message`` is for humans."""

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class Unauthorized(ServiceError):
    """No API key, or one that is unknown."""

    code = "unauthorized"


class NotFound(ServiceError):
    """No such job for this tenant (another tenant's job is not found either)."""

    code = "not_found"


class Gone(ServiceError):
    """The job was deleted; only its tombstone is left."""

    code = "job_deleted"


class Conflict(ServiceError):
    """The request conflicts with the resource's state (deleting a running job, reusing an upload)."""

    code = "conflict"


class InvalidRequest(ServiceError):
    """The request is malformed or names an invalid option (codes: invalid_request, invalid_option, ...)."""

    code = "invalid_request"


class IdempotencyKeyReused(ServiceError):
    """An Idempotency-Key seen before came with a different request (other options or other files)."""

    code = "idempotency_key_reused"


class PayloadTooLarge(ServiceError):
    """A body, file or field is larger than the configured limit."""

    code = "payload_too_large"


class UnsupportedMedia(ServiceError):
    """A file's content (sniffed from its first bytes) is not an accepted format."""

    code = "unsupported_media_type"


class TooManyJobs(ServiceError):
    """The tenant already has the maximum number of queued jobs."""

    code = "too_many_queued_jobs"


class TooManyIdentities(ServiceError):
    """The tenant already keeps the maximum number of identities."""

    code = "too_many_identities"


class Unavailable(ServiceError):
    """A dependency (Redis, S3, the broker) cannot be reached."""

    code = "service_unavailable"
