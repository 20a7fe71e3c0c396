"""``GET /v1/jobs/{id}/report``: a finished job's full report through the API.

``output.report_url`` points at the bucket, which a browser page on the API's origin may not read
(the bucket sends no CORS headers); the web page reads the per-frame rows here instead, with the
same API key and tenant isolation as every other job route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import ServicesDep, TenantDep
from api.error_codes import declare
from jobs.errors import NotFound
from jobs.model import Status

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_REPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the report JSON (`report.json`): summaries and one row per frame",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.get(
    "/{job_id}/report",
    response_class=StreamingResponse,
    responses=_REPORT,
    openapi_extra=declare("not_found", "job_deleted", "storage_unavailable"),
)
def get_report(job_id: str, services: ServicesDep, tenant: TenantDep) -> StreamingResponse:
    """The full report of a succeeded job, per-frame rows included (the job object carries its summary)."""
    record = services.store.get_for(tenant, job_id)
    if record.status is not Status.SUCCEEDED or not record.report_key:
        raise NotFound(f"job {job_id} is {record.status}: only a succeeded job has a report", field="id")
    chunks = None if record.data_removed else services.storage.stream(record.report_key)
    if chunks is None:
        raise NotFound(f"the report of job {job_id} was removed (retention or delete)", field="id")
    return StreamingResponse(chunks, media_type="application/json")
