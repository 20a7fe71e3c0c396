"""``/v1/jobs``: create (multipart or JSON), read, list, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import ServicesDep, TenantDep
from api.error_codes import UPLOAD_CODES, declare
from api.openapi import CREATE_JOB_BODY
from api.present import base_url, present
from api.submission import Submission
from jobs.errors import Conflict, UnsupportedMedia
from jobs.model import Status
from jobs.schemas import JobPublic, JobsPublic
from jobs.storage import output_key, report_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_CREATE_ERRORS = declare(
    *UPLOAD_CODES,
    "conflict",
    "video_too_large",
    "upload_not_found",
    "no_video_stream",
    "video_too_small",
    "limit_exceeded",
    "webhook_url_forbidden",
    "idempotency_key_reused",
    "too_many_queued_jobs",
    "identity_not_found",
    "identity_not_ready",
)


@router.post("", status_code=202, openapi_extra=CREATE_JOB_BODY | _CREATE_ERRORS)
async def create_job(
    request: Request,
    response: Response,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobPublic:
    """Create a job. A retry with the same `Idempotency-Key` and the same content returns the first job
    (header `Idempotent-Replayed: true`); the key with other options or files is refused
    (`idempotency_key_reused`)."""
    content_type = request.headers.get("content-type", "")
    submission = Submission(services)
    if content_type.startswith("multipart/form-data"):
        submitted = await submission.from_multipart(request, tenant, idempotency_key)
    elif content_type.startswith("application/json"):
        submitted = await submission.from_json(await request.body(), tenant, idempotency_key)
    else:
        raise UnsupportedMedia(
            "send multipart/form-data or application/json", field="content-type", code="unsupported_content_type"
        )
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await to_thread.run_sync(present, services, submitted.job, base_url(services, request))


@router.get("", openapi_extra=declare("invalid_request", "invalid_cursor"))
def list_jobs(
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobsPublic:
    """The caller's jobs, newest first, optionally of one status."""
    page = services.store.list(tenant, status=status, cursor=cursor, limit=limit)
    base = base_url(services, request)
    return JobsPublic(
        data=[present(services, r, base) for r in page.items],
        next_cursor=page.next_cursor,
        has_more=page.next_cursor is not None,
    )


@router.get("/{job_id}", openapi_extra=declare("not_found", "job_deleted"))
def get_job(job_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    return present(services, services.store.get_for(tenant, job_id), base_url(services, request))


@router.post("/{job_id}/cancel", openapi_extra=declare("not_found", "job_deleted"))
def cancel_job(job_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    """Cancel: a queued job at once; a running one stops at its next step (terminated after a grace period)."""
    transition = services.store.cancel(tenant, job_id, cancel_grace_s=services.settings.cancel_grace_s)
    services.dispatcher.webhook(transition.delivery)
    return present(services, services.store.get_for(tenant, job_id), base_url(services, request))


@router.delete(
    "/{job_id}",
    status_code=204,
    openapi_extra=declare("not_found", "job_deleted", "job_not_terminal", "storage_unavailable"),
)
def delete_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Remove a finished job's inputs and outputs; a tombstone answers 410 afterwards."""
    record = services.store.get_for(tenant, job_id)
    if not record.status.is_terminal:
        raise Conflict(
            f"job {job_id} is {record.status}; cancel it and wait until it ends", field="id", code="job_not_terminal"
        )
    inputs = record.inputs.object_keys() if record.inputs else []
    keys = [*inputs, output_key(tenant, job_id), report_key(tenant, job_id)]
    services.storage.delete(keys)
    services.store.tombstone(tenant, job_id, ttl_s=services.settings.tombstone_ttl_s)
    return Response(status_code=204)
