"""``/v1/jobs``: create (multipart or JSON), read, list, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import ServicesDep, TenantDep
from api.errors import ErrorBody
from api.openapi import CREATE_JOB_BODY
from api.present import base_url, present
from api.submission import Submission
from jobs.errors import Conflict, UnsupportedMedia
from jobs.model import Status
from jobs.schemas import JobPublic, JobsPublic
from jobs.storage import output_key, report_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 409, 410, 413, 415, 422, 429, 503)}


@router.post("", status_code=202, responses=_ERRORS, openapi_extra=CREATE_JOB_BODY)
async def create_job(
    request: Request,
    response: Response,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobPublic:
    """Create a job. A repeated `Idempotency-Key` returns the first job (header `Idempotent-Replayed: true`)."""
    content_type = request.headers.get("content-type", "")
    submission = Submission(services)
    if content_type.startswith("multipart/form-data"):
        submitted = await submission.from_multipart(request, tenant, idempotency_key)
    elif content_type.startswith("application/json"):
        submitted = await submission.from_json(await request.body(), tenant, idempotency_key)
    else:
        raise UnsupportedMedia("send multipart/form-data or application/json", field="content-type",
                               code="unsupported_content_type")
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await to_thread.run_sync(present, services, submitted.job, base_url(services, request))


@router.get("", responses=_ERRORS)
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
    return JobsPublic(data=[present(services, r, base) for r in page.items], next_cursor=page.next_cursor,
                      has_more=page.next_cursor is not None)


@router.get("/{job_id}", responses=_ERRORS)
def get_job(job_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    return present(services, services.store.get_for(tenant, job_id), base_url(services, request))


@router.post("/{job_id}/cancel", responses=_ERRORS)
def cancel_job(job_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    """Cancel: a queued job at once; a running one stops at its next step (terminated after a grace period)."""
    transition = services.store.cancel(tenant, job_id, cancel_grace_s=services.settings.cancel_grace_s)
    services.dispatcher.webhook(transition.delivery)
    return present(services, services.store.get_for(tenant, job_id), base_url(services, request))


@router.delete("/{job_id}", status_code=204, responses=_ERRORS)
def delete_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Remove a finished job's inputs and outputs; a tombstone answers 410 afterwards."""
    record = services.store.get_for(tenant, job_id)
    if not record.status.is_terminal:
        raise Conflict(f"job {job_id} is {record.status}; cancel it and wait until it ends", field="id",
                       code="job_not_terminal")
    inputs = record.inputs.object_keys() if record.inputs else []
    keys = [*inputs, output_key(tenant, job_id), report_key(tenant, job_id)]
    services.storage.delete(keys)
    services.store.tombstone(tenant, job_id, ttl_s=services.settings.tombstone_ttl_s)
    return Response(status_code=204)
