"""Errors of the job service, each with a stable ``code`` and, where it applies, the ``field``.

They are :class:`~ipfvr_core.errors.IPFVRError` s (one base: ``code``, ``message``, ``field``) that
describe what went wrong in service terms only; the API maps each code to an HTTP status in
``api/error_codes.py`` and nowhere else.
"""

from __future__ import annotations

from ipfvr_core.errors import IPFVRError


class ServiceError(IPFVRError):
    """Base class of the service's errors (the library's own derive from ``IPFVRError`` directly)."""


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
